//! Large buffers backed by transparent huge pages.
//!
//! glibc maps every buffer above its mmap threshold (256 KiB, see `main.rs`) afresh, so a
//! multi-megabyte body or chunk buffer is faulted in page by page: a 5 MB body is 1,280 page
//! faults, each a trip through the kernel. Where the kernel offers transparent huge pages on
//! request (`/sys/kernel/mm/transparent_hugepage/enabled` is `madvise` or `always`), asking
//! for them makes that 3 faults of 2 MiB; elsewhere the advice is ignored.

use std::mem::MaybeUninit;

const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Advises the kernel to back the whole 2 MiB pages inside `buffer` with huge pages. Call it
/// before the buffer is first written. Does nothing for a buffer smaller than two huge pages.
pub fn advise_huge_pages(buffer: &mut [MaybeUninit<u8>]) {
    if buffer.len() < 2 * HUGE_PAGE_BYTES {
        return;
    }
    let start = buffer.as_mut_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE_BYTES);
    let end = (start + buffer.len()) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if end <= first {
        return;
    }
    // SAFETY: the range lies inside `buffer`, which this caller owns; `MADV_HUGEPAGE` changes
    // only how the kernel backs those pages, never their contents, and a refusal (a kernel
    // without transparent huge pages) is harmless, so its result is ignored.
    unsafe {
        nix::libc::madvise(
            first as *mut nix::libc::c_void,
            end - first,
            nix::libc::MADV_HUGEPAGE,
        );
    }
}
