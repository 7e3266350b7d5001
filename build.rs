//! Rebuilds the engine when a migration is added or changed: `refinery::embed_migrations!`
//! reads `migrations/` at compile time, and without this cargo would not notice a new file.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
