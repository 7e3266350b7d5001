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

/// Request bodies below this size are read into fresh buffers: mapping and faulting in a few
/// pages costs little, and keeping them would only add resident memory.
const KEPT_BODY_MIN_BYTES: usize = 1 << 20;

/// Nor are bodies above this size kept: the largest body `POST /data-scans` accepts by default
/// (`ingest.max_scan_body_bytes`). Up to this size, the engine's memory beyond the admission
/// budget is at most `max_kept` times this, and only for [`KEPT_BODY_IDLE`] after a body that
/// large.
const KEPT_BODY_MAX_BYTES: usize = 64 << 20;

/// The sizes of buffers that may be kept are rounded up to a multiple of this, which is also
/// the smallest slack between a kept buffer and a body it is taken for.
const KEPT_BODY_GRAIN_BYTES: usize = 256 << 10;

/// A kept buffer is taken only for a body it holds that is at most a sixty-fourth (or
/// [`KEPT_BODY_GRAIN_BYTES`]) smaller, and a new buffer is made half that much larger than its
/// body (rounded up to the grain): the load test's scans of 100,000 records (50.9 to 51.0 MB)
/// differ by 0.3 %, so they share buffers, while a much smaller body is never read into a much
/// larger buffer, which would be resident in full and charged only for the smaller body.
const KEPT_BODY_SLACK_DIVISOR: usize = 64;

/// The largest buffer a body of `length` bytes may be read into: what admission charges for
/// the body itself.
pub fn body_buffer_bound(length: usize) -> usize {
    if (KEPT_BODY_MIN_BYTES..=KEPT_BODY_MAX_BYTES).contains(&length) {
        length + kept_body_slack(length)
    } else {
        length
    }
}

fn kept_body_slack(length: usize) -> usize {
    (length / KEPT_BODY_SLACK_DIVISOR).max(KEPT_BODY_GRAIN_BYTES)
}

/// A kept buffer unused this long is returned to the system.
pub const KEPT_BODY_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// Buffers of request bodies of 1 to 64 MiB, kept between submissions while they arrive one
/// after another. A fresh multi-megabyte buffer is mapped anew and every page of it zeroed by the
/// kernel as the body is first written into it: in a burst of 100 scans of 100,000 records,
/// 11 to 16 % of the request and parsing threads' CPU went to zeroing pages (`clear_page_erms`).
/// A kept buffer is already resident. At most `max_kept` buffers are kept (one per parsing slot:
/// as many bodies as are parsed at once), and each is dropped once unused for
/// [`KEPT_BODY_IDLE`], so an idle engine holds none ([`BodyBuffers::drop_idle`], called every
/// second). A kept buffer is outside the admission budget only between two submissions: the
/// next one takes it for a body the budget charged, and only for a body of nearly its size
/// ([`body_buffer_bound`], which admission charges).
pub struct BodyBuffers {
    max_kept: usize,
    kept: std::sync::Mutex<Vec<KeptBuffer>>,
}

struct KeptBuffer {
    buffer: bytes::BytesMut,
    since: std::time::Instant,
}

impl BodyBuffers {
    pub fn new(max_kept: usize) -> BodyBuffers {
        BodyBuffers {
            max_kept,
            kept: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// An empty buffer for a body of `length` bytes: the smallest kept one that holds it and is
    /// at most [`body_buffer_bound`] large, else a new one (on huge pages where offered). A
    /// buffer that may be kept is made half that slack larger than its body (rounded up to
    /// [`KEPT_BODY_GRAIN_BYTES`]): bodies of one kind differ by a few bytes, and a buffer sized
    /// to the byte would fit the next body only when that body is no larger.
    pub fn take(&self, length: usize) -> bytes::BytesMut {
        let mut capacity = length;
        if (KEPT_BODY_MIN_BYTES..=KEPT_BODY_MAX_BYTES).contains(&length) {
            let slack = kept_body_slack(length);
            let taken = length..=length + slack;
            let mut kept = self.lock();
            let smallest_fitting = kept
                .iter()
                .enumerate()
                .filter(|(_, kept)| taken.contains(&kept.buffer.capacity()))
                .min_by_key(|(_, kept)| kept.buffer.capacity())
                .map(|(position, _)| position);
            if let Some(position) = smallest_fitting {
                return kept.swap_remove(position).buffer;
            }
            capacity = (length + slack / 2)
                .next_multiple_of(KEPT_BODY_GRAIN_BYTES)
                .min(length + slack);
        }
        let mut buffer = bytes::BytesMut::with_capacity(capacity);
        advise_huge_pages(buffer.spare_capacity_mut());
        buffer
    }

    /// Keeps `body`'s buffer for the next body if nothing else holds it and its size is
    /// between [`KEPT_BODY_MIN_BYTES`] and [`KEPT_BODY_MAX_BYTES`]; when `max_kept` are kept
    /// already, the smallest of them all is dropped.
    pub fn give_back(&self, body: bytes::Bytes) {
        let Ok(mut buffer) = body.try_into_mut() else {
            return;
        };
        let size = buffer.capacity();
        if !(KEPT_BODY_MIN_BYTES..=KEPT_BODY_MAX_BYTES).contains(&size) || self.max_kept == 0 {
            return;
        }
        buffer.clear();
        let mut kept = self.lock();
        kept.push(KeptBuffer {
            buffer,
            since: std::time::Instant::now(),
        });
        if kept.len() > self.max_kept {
            let smallest = (0..kept.len())
                .min_by_key(|position| kept[*position].buffer.capacity())
                .expect("more than max_kept buffers are kept");
            kept.swap_remove(smallest);
        }
    }

    /// Drops the buffers unused for [`KEPT_BODY_IDLE`] or longer.
    pub fn drop_idle(&self) {
        self.lock()
            .retain(|kept| kept.since.elapsed() < KEPT_BODY_IDLE);
    }

    /// Bytes of the buffers kept now.
    pub fn kept_bytes(&self) -> usize {
        self.lock().iter().map(|kept| kept.buffer.capacity()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<KeptBuffer>> {
        // Nothing panics while holding the lock; a poisoned one still holds whole buffers.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;

    fn body_of(buffers: &BodyBuffers, length: usize) -> bytes::Bytes {
        let mut buffer = buffers.take(length);
        buffer.resize(length, b'x');
        buffer.freeze()
    }

    #[test]
    fn a_large_body_buffer_is_used_again_and_a_small_one_is_not_kept() {
        let buffers = BodyBuffers::new(2);
        let body = body_of(&buffers, 3 * MIB);
        let address = body.as_ptr();
        buffers.give_back(body);
        assert_eq!(
            buffers.kept_bytes(),
            3 * MIB + 256 * KIB,
            "the body and half its slack"
        );
        let again = buffers.take(3 * MIB + 1_000);
        assert_eq!(again.as_ptr(), address, "the kept buffer is taken again");
        assert!(again.is_empty());
        assert_eq!(buffers.kept_bytes(), 0);

        buffers.give_back(body_of(&buffers, MIB / 2));
        assert_eq!(buffers.kept_bytes(), 0, "small bodies are not kept");
        buffers.give_back(body_of(&buffers, KEPT_BODY_MAX_BYTES + 1));
        assert_eq!(buffers.kept_bytes(), 0, "the largest bodies are not kept");
    }

    #[test]
    fn bodies_a_few_bytes_apart_share_a_kept_buffer() {
        let buffers = BodyBuffers::new(2);
        let body = body_of(&buffers, 5 * MIB + 100);
        assert_eq!(body.len(), 5 * MIB + 100);
        let address = body.as_ptr();
        buffers.give_back(body);
        let larger = buffers.take(5 * MIB + 4_000);
        assert_eq!(
            larger.as_ptr(),
            address,
            "a body 3,900 bytes larger fits the kept buffer"
        );
        assert!(larger.capacity() < 5 * MIB + KEPT_BODY_GRAIN_BYTES + 100);
    }

    #[test]
    fn a_buffer_still_shared_is_not_kept() {
        let buffers = BodyBuffers::new(2);
        let body = body_of(&buffers, 2 * MIB);
        let part = body.slice(..10);
        buffers.give_back(body);
        assert_eq!(buffers.kept_bytes(), 0);
        assert_eq!(&part[..], b"xxxxxxxxxx");
    }

    #[test]
    fn at_most_max_kept_are_kept_the_largest_ones_and_a_too_small_one_is_not_taken() {
        let buffers = BodyBuffers::new(2);
        let bodies = [2, 5, 3].map(|mib| body_of(&buffers, mib * MIB));
        for body in bodies {
            buffers.give_back(body);
        }
        // 5 and 3 MiB with half their slack (at least 256 KiB), in 256 KiB steps.
        let both = 5 * MIB + 256 * KIB + 3 * MIB + 256 * KIB;
        assert_eq!(buffers.kept_bytes(), both, "the 2 MiB one was dropped");
        assert!(buffers.take(6 * MIB).capacity() >= 6 * MIB);
        assert_eq!(buffers.kept_bytes(), both, "neither kept buffer fits 6 MiB");
        assert!(buffers.take(5 * MIB).capacity() >= 5 * MIB);
        assert_eq!(buffers.kept_bytes(), 3 * MIB + 256 * KIB);
        let fresh = buffers.take(2 * MIB);
        assert!(
            fresh.capacity() < 3 * MIB,
            "a body is not read into a buffer much larger than itself"
        );
        assert_eq!(buffers.kept_bytes(), 3 * MIB + 256 * KIB);
    }

    #[test]
    fn buffers_of_the_largest_scans_are_kept_for_bodies_of_their_kind() {
        // A scan of 100,000 of the load test's records is about 51 MB.
        let buffers = BodyBuffers::new(2);
        let body = body_of(&buffers, 51_000_000);
        let address = body.as_ptr();
        buffers.give_back(body);
        for length in [51_300_000, 50_900_000] {
            let again = buffers.take(length);
            assert_eq!(
                again.as_ptr(),
                address,
                "{length} bytes fit the kept buffer"
            );
            buffers.give_back(again.freeze());
        }
        let smaller = buffers.take(50_000_000);
        assert_ne!(
            smaller.as_ptr(),
            address,
            "40 MB are not read into a 52 MB buffer"
        );
    }

    #[test]
    fn kept_buffers_are_dropped_once_idle() {
        let buffers = BodyBuffers::new(2);
        buffers.give_back(body_of(&buffers, 2 * MIB));
        buffers.drop_idle();
        assert_eq!(
            buffers.kept_bytes(),
            2 * MIB + 256 * KIB,
            "not idle long enough yet"
        );
        for kept in buffers.lock().iter_mut() {
            kept.since -= KEPT_BODY_IDLE;
        }
        buffers.drop_idle();
        assert_eq!(buffers.kept_bytes(), 0);
    }
}
