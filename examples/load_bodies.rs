//! Writes the load benchmark's request bodies: `load_bodies <DIR>` creates
//! `review-3.json` and `review-50.json` (pod CREATEs with 3 and 50 real-sized
//! containers; the same bodies the criterion `review` bench uses), and
//! `review-3-new-<n>.json` for n in 0..384: the 3-container body with images no other
//! body has (a suffix on their tags), for admissions that decide their images afresh.

// An example's broken setup should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: load_bodies <DIR>"));
    std::fs::create_dir_all(&dir).unwrap();
    for containers in [3, 50] {
        let path = dir.join(format!("review-{containers}.json"));
        std::fs::write(&path, support::review_body(containers)).unwrap();
        println!("{}", path.display());
    }
    for n in 0..384 {
        let path = dir.join(format!("review-3-new-{n}.json"));
        std::fs::write(
            &path,
            support::review_body_tagged(3, Some(&format!("new{n}"))),
        )
        .unwrap();
    }
}
