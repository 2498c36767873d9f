//! Test binaries of their own (`harness = false`) that run async scenarios one after
//! another on one shared environment, because a control plane is too slow to start per
//! test: cargo test's filters and `--list`, its `test <name> ... ok` lines, a failed
//! scenario reported without stopping the others, and a failing exit code.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Instant;

/// One scenario: an async function of the shared environment.
pub type Scenario<E> = for<'a> fn(&'a mut E) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// `[(name, scenario)]` from the names of async functions taking `&mut $env`.
#[macro_export]
macro_rules! scenarios {
    ($env:ty; $($name:ident),* $(,)?) => {
        [$((stringify!($name), (|env| Box::pin($name(env))) as $crate::common::scenarios::Scenario<$env>)),*]
    };
}

/// How one binary's scenarios run.
pub struct Runner<E> {
    /// What the scenarios are of, for the output ("API server").
    pub what: &'static str,
    /// Starts the shared environment.
    pub start: fn() -> Pin<Box<dyn Future<Output = E>>>,
    /// Runs before each scenario (puts the environment back as scenarios expect it).
    pub before_each: Scenario<E>,
    /// Runs after the last scenario, before the environment is dropped.
    pub after_all: fn(&mut E),
}

impl<E> Runner<E> {
    /// Runs the scenarios the command line selects; the binary's exit code.
    pub fn run(self, all: &[(&'static str, Scenario<E>)]) -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.iter().any(|a| a == "--list") {
            for (name, _) in all {
                println!("{name}: test");
            }
            return ExitCode::SUCCESS;
        }
        let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        let selected: Vec<_> = all
            .iter()
            .filter(|(name, _)| {
                filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
            })
            .collect();
        println!("\nrunning {} {} scenarios", selected.len(), self.what);
        if selected.is_empty() {
            return ExitCode::SUCCESS;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let started = Instant::now();
        let mut env = runtime.block_on((self.start)());
        println!(
            "environment ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let mut failed = Vec::new();
        for (name, scenario) in selected {
            let began = Instant::now();
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                runtime.block_on(async {
                    (self.before_each)(&mut env).await;
                    scenario(&mut env).await;
                });
            }));
            let seconds = began.elapsed().as_secs_f64();
            match result {
                Ok(()) => println!("test {name} ... ok ({seconds:.1} s)"),
                Err(_) => {
                    println!("test {name} ... FAILED ({seconds:.1} s)");
                    failed.push(*name);
                }
            }
        }
        (self.after_all)(&mut env);
        drop(env);
        println!(
            "\n{} scenarios: {} failed; finished in {:.1} s",
            self.what,
            failed.len(),
            started.elapsed().as_secs_f64()
        );
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            for name in failed {
                println!("    {name}");
            }
            ExitCode::FAILURE
        }
    }
}
