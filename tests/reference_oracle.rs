//! Differential test against the live Go library: `target/tools/bin/reforacle` (built by
//! `scripts/cluster-tools` from `github.com/distribution/reference` v0.6.0, the parser
//! the kubelet and containerd use) reads image strings and prints its answers; every
//! answer of `ImageRef` must be the same.
//!
//! First the oracle must reproduce the recorded answers in `fixtures/image-refs.jsonl`
//! (that proves it is the library the fixtures came from), then it judges
//! `ORACLE_CASES` (default 100,000) generated strings: structure-aware (registries with
//! ports, IPv4 and IPv6, uppercase, `localhost`; paths with `.`, `_`, `__`, `-`; tags;
//! digests of several algorithms and lengths; names near 255 characters), mutated
//! corpus strings, and junk. `ORACLE_SEED` repeats a run; the seed is printed.
//!
//! Long form: `ORACLE_CASES=5000000 cargo test --release --test reference_oracle -- --nocapture`.

// Test code: a failed setup step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "common/refs.rs"]
mod refs;
#[path = "common/tools.rs"]
mod tools;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use refs::GoAnswer;

fn project_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Asks the Go library about every string in `inputs`, in one process.
fn ask_go(inputs: &[String]) -> Vec<GoAnswer> {
    let oracle = tools::require("reforacle", "run scripts/cluster-tools (needs Go)");
    let mut child = Command::new(&oracle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", oracle.display()));
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<String> = inputs
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    let writer = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(&mut stdin);
        for line in lines {
            writeln!(out, "{line}").unwrap();
        }
        out.flush().unwrap();
    });
    let answers: Vec<GoAnswer> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).expect("reforacle prints JSON"))
        .collect();
    writer.join().unwrap();
    assert!(child.wait().unwrap().success(), "reforacle failed");
    assert_eq!(answers.len(), inputs.len(), "reforacle lost answers");
    for (answer, input) in answers.iter().zip(inputs) {
        assert_eq!(&answer.input, input, "reforacle answered out of order");
    }
    answers
}

#[test]
fn the_oracle_reproduces_the_recorded_answers() {
    let recorded = refs::recorded();
    let inputs: Vec<String> = recorded.iter().map(|r| r.input.clone()).collect();
    let live = ask_go(&inputs);
    let differ: Vec<String> = recorded
        .iter()
        .zip(&live)
        .filter(|(r, l)| r != l)
        .map(|(r, l)| format!("recorded {r:?}\n    live {l:?}"))
        .collect();
    assert!(
        differ.is_empty(),
        "the live oracle is not the library the fixtures came from:\n{}",
        differ.join("\n")
    );
}

#[test]
fn agrees_with_the_live_go_library_on_generated_strings() {
    let cases: usize = std::env::var("ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("ORACLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("ORACLE_SEED={seed} ORACLE_CASES={cases}");
    let corpus: Vec<String> = refs::recorded().into_iter().map(|r| r.input).collect();
    let mut generator = Generator::new(seed, corpus);
    let started = std::time::Instant::now();
    let mut total = 0;
    let mut valid = 0;
    // Batches keep memory flat for the long form (millions).
    while total < cases {
        let batch: Vec<String> = (0..(cases - total).min(200_000))
            .map(|_| generator.image())
            .collect();
        let answers = ask_go(&batch);
        valid += answers.iter().filter(|a| a.valid).count();
        let (failed, shown) = refs::report(&answers, 40);
        assert!(
            failed == 0,
            "ORACLE_SEED={seed}: {failed} of {} generated references disagree with the Go library:\n{shown}",
            answers.len()
        );
        total += batch.len();
    }
    println!(
        "{total} strings ({valid} valid for Go) agreed with the Go library in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A generator that only makes junk (or only valid names) would test little.
    assert!(
        valid > total / 4 && valid < total * 3 / 4,
        "only {valid} of {total} valid"
    );
}

#[test]
fn the_project_root_has_the_oracle_source() {
    // The oracle is built from here; a clone without it cannot run the test above.
    assert!(project_root().join("tools/reforacle/main.go").is_file());
}

/// SplitMix64: small, seedable, good enough to pick grammar pieces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// 1 to `max` characters of `alphabet`.
    fn word(&mut self, alphabet: &str, max: usize) -> String {
        let len = 1 + self.below(max);
        self.string_of(alphabet, len)
    }

    fn string_of(&mut self, alphabet: &str, len: usize) -> String {
        let chars: Vec<char> = alphabet.chars().collect();
        (0..len).map(|_| chars[self.below(chars.len())]).collect()
    }
}

const LOWER: &str = "abcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &str = "0123456789abcdef";
const TAG: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
const JUNK: &str = "aZ09./:@_-+ \t[]%?#~!é€\u{0}\u{7f}ß日";

struct Generator {
    rng: Rng,
    corpus: Vec<String>,
}

impl Generator {
    fn new(seed: u64, corpus: Vec<String>) -> Self {
        Self {
            rng: Rng(seed),
            corpus,
        }
    }

    fn image(&mut self) -> String {
        match self.rng.below(100) {
            0..=69 => self.structured(),
            70..=84 => self.mutated_corpus(),
            85..=91 => self.near_length_limit(),
            _ => self.junk(),
        }
    }

    fn structured(&mut self) -> String {
        let mut out = String::new();
        if !self.rng.chance(30) {
            out.push_str(&self.registry());
            out.push('/');
        }
        let components = 1 + self.rng.below(4);
        out.push_str(&self.path(components));
        if self.rng.chance(55) {
            out.push(':');
            out.push_str(&self.tag());
        }
        if self.rng.chance(30) {
            out.push('@');
            out.push_str(&self.digest());
        }
        if self.rng.chance(5) {
            out = out.to_uppercase();
        }
        out
    }

    fn registry(&mut self) -> String {
        let host = match self.rng.below(12) {
            0 => "docker.io".to_owned(),
            1 => "index.docker.io".to_owned(),
            2 => "registry-1.docker.io".to_owned(),
            3 => "localhost".to_owned(),
            4 => format!(
                "{}.{}.{}.{}",
                self.rng.below(300),
                self.rng.below(256),
                self.rng.below(256),
                self.rng.below(256)
            ),
            5 => self
                .rng
                .pick(&[
                    "[::1]",
                    "[2001:db8::1]",
                    "[fe80::1%eth0]",
                    "[::ffff:10.0.0.1]",
                    "[::]",
                    "::1",
                    "[::1",
                    "[2001:DB8::A]",
                    "[]",
                ])
                .to_owned(),
            6 => self
                .rng
                .pick(&["Foo", "FOO.com", "Example.COM", "UPPER"])
                .to_owned(),
            7 => self.component(),
            _ => {
                let labels = 1 + self.rng.below(3);
                let mut parts: Vec<String> = (0..labels).map(|_| self.host_label()).collect();
                parts.push(
                    self.rng
                        .pick(&["com", "io", "example", "local", "k8s.io", "c0m"])
                        .to_owned(),
                );
                parts.join(".")
            }
        };
        if self.rng.chance(35) {
            let port = match self.rng.below(8) {
                0 => String::new(),
                1 => "abc".to_owned(),
                2 => "65536".to_owned(),
                3 => "0".to_owned(),
                4 => "123456".to_owned(),
                _ => self.rng.below(65536).to_string(),
            };
            format!("{host}:{port}")
        } else {
            host
        }
    }

    fn host_label(&mut self) -> String {
        let mut label = self.rng.word(LOWER, 10);
        match self.rng.below(20) {
            0 => label.insert(0, '-'),
            1 => label.push('-'),
            2 => label.insert(label.len() / 2, '-'),
            3 => label.insert(label.len() / 2, '_'),
            4 => label = label.to_uppercase(),
            _ => {}
        }
        label
    }

    fn component(&mut self) -> String {
        let mut out = self.rng.word(LOWER, 8);
        for _ in 0..self.rng.below(3) {
            let sep = if self.rng.chance(90) {
                self.rng.pick(&[".", "_", "__", "-", "--", "---"])
            } else {
                self.rng.pick(&["..", "___", "._", "-_", "_-"])
            };
            out.push_str(sep);
            out.push_str(&self.rng.word(LOWER, 6));
        }
        match self.rng.below(60) {
            0 => out.insert(0, '-'),
            1 => out.push('.'),
            2 => out.insert(0, '_'),
            3 => out = out.to_uppercase(),
            4 => out.push('A'),
            5 => out = self.rng.string_of(HEX, 64),
            _ => {}
        }
        out
    }

    fn path(&mut self, components: usize) -> String {
        let mut parts: Vec<String> = (0..components).map(|_| self.component()).collect();
        if self.rng.chance(3) {
            parts.push(String::new()); // trailing or doubled slash
        }
        parts.join("/")
    }

    fn tag(&mut self) -> String {
        if self.rng.chance(50) {
            return self.rng.word(LOWER, 12);
        }
        let len = match self.rng.below(10) {
            0 => 128,
            1 => 129,
            2 => 0,
            _ => 1 + self.rng.below(20),
        };
        let mut tag = self.rng.string_of(TAG, len);
        if self.rng.chance(15) && !tag.is_empty() {
            tag.replace_range(0..1, self.rng.pick(&[".", "-", "_", "A"]));
        }
        if self.rng.chance(3) {
            tag.push_str(self.rng.pick(&["/x", ":x", "+x", "é"]));
        }
        tag
    }

    fn digest(&mut self) -> String {
        if self.rng.chance(50) {
            let hex = self.rng.string_of(HEX, 64);
            return format!("sha256:{hex}");
        }
        let algorithm = self.rng.pick(&[
            "sha256",
            "sha256",
            "sha256",
            "sha512",
            "sha384",
            "sha1",
            "md5",
            "SHA256",
            "sha256+b64u",
            "multihash+base58",
            "sha-256",
            "",
            "s",
            "sha256.x",
        ]);
        let len = match self.rng.below(10) {
            0 => 128,
            1 => 96,
            2 => 63,
            3 => 65,
            4 => 32,
            5 => self.rng.below(140),
            _ => 64,
        };
        let mut hex = self.rng.string_of(HEX, len);
        match self.rng.below(12) {
            0 => hex = hex.to_uppercase(),
            1 if !hex.is_empty() => hex.replace_range(0..1, "g"),
            2 => hex = self.rng.string_of("abcdefghijklmnopqrstuvwxyz=_-", len),
            _ => {}
        }
        format!("{algorithm}:{hex}")
    }

    fn near_length_limit(&mut self) -> String {
        // Repository paths of 250-260 characters (the limit is 255, counted after
        // `library/` is added), with and without a registry.
        let target = 246 + self.rng.below(16);
        let mut path = String::new();
        while path.len() < target {
            if !path.is_empty() {
                path.push('/');
            }
            let left = target - path.len();
            path.push_str(&self.rng.string_of(LOWER, left.clamp(1, 60)));
        }
        let prefix = self
            .rng
            .pick(&["", "", "docker.io/", "quay.io/", "localhost:5000/"]);
        let suffix = self.rng.pick(&["", ":v1", "@sha256:"]);
        let digest = if suffix.starts_with('@') {
            self.rng.string_of(HEX, 64)
        } else {
            String::new()
        };
        format!("{prefix}{path}{suffix}{digest}")
    }

    fn mutated_corpus(&mut self) -> String {
        let mut s: Vec<char> = self.corpus[self.rng.below(self.corpus.len())]
            .chars()
            .collect();
        for _ in 0..1 + self.rng.below(3) {
            let at = self.rng.below(s.len() + 1);
            match self.rng.below(4) {
                0 if at < s.len() => {
                    s.remove(at);
                }
                1 => {
                    let c = self.rng.string_of("/:@._-aA0", 1);
                    s.insert(at, c.chars().next().unwrap());
                }
                2 if at < s.len() => s[at] = s[at].to_ascii_uppercase(),
                _ => {
                    let junk = self.rng.string_of(JUNK, 1);
                    s.insert(at, junk.chars().next().unwrap());
                }
            }
        }
        s.into_iter().collect()
    }

    fn junk(&mut self) -> String {
        let len = self.rng.below(40);
        self.rng.string_of(JUNK, len)
    }
}
