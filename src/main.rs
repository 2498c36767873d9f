//! The `harbor-pilot` binary.

fn main() {
    println!("harbor-pilot {}", env!("CARGO_PKG_VERSION"));
}
