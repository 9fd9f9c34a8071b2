//! The proptest entry: runs the generated sequences against one database,
//! reports what was applied and checked, and prints the minimal failing ops.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use proptest::test_runner::Config as ProptestConfig;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};
use tenantry_db::testing::TestDatabase;
use tenantry_db::{ResourceId, StatementMode};

use crate::checks::Case;
use crate::ops::{sequence, ALL};
use crate::state::Model;
use crate::DEFAULT_CASES;

fn cases() -> u32 {
    match std::env::var("TENANTRY_MODEL_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("TENANTRY_MODEL_CASES must be a number, got {v:?}")),
        Err(_) => DEFAULT_CASES,
    }
}

#[test]
fn random_operation_sequences_match_the_isolation_model_after_every_step() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tdb = rt.block_on(TestDatabase::new());
    // Even cases use named prepared statements, odd ones unnamed statements
    // (the pgbouncer mode): both must keep every transaction in its tenant.
    let pools = [
        tdb.database_with(StatementMode::Prepared, 10),
        tdb.database_with(StatementMode::Unnamed, 10),
    ];
    let superuser = rt.block_on(tdb.superuser_client());

    let mut config = ProptestConfig::with_cases(cases());
    config.failure_persistence = None;
    config.max_shrink_iters = 4096;
    let mut runner = TestRunner::new(config);

    let started = Instant::now();
    let sequences = Cell::new(0u64);
    let steps = Cell::new(0u64);
    let skipped = Cell::new(0u64);
    let check_time = Cell::new(std::time::Duration::ZERO);
    let foreign: RefCell<Option<ResourceId>> = RefCell::new(None);
    let stats: RefCell<BTreeMap<String, u64>> = RefCell::new(BTreeMap::new());

    let result = runner.run(&sequence(), |ops| {
        rt.block_on(async {
            let mut case = Case {
                db: &pools[(sequences.get() % 2) as usize],
                stats: &stats,
                m: Model::new(*foreign.borrow()),
                trace: Vec::new(),
            };
            let mut failure = None;
            for (i, op) in ops.iter().enumerate() {
                let before = case.trace.len();
                match case.step(op).await {
                    Ok(true) => {
                        steps.set(steps.get() + 1);
                        let t0 = Instant::now();
                        let checked = case.check(op.extra()).await;
                        check_time.set(check_time.get() + t0.elapsed());
                        if let Err(e) = checked {
                            failure = Some(format!("after step {i} ({op:?}): {e}"));
                        }
                    }
                    Ok(false) => {
                        skipped.set(skipped.get() + 1);
                        case.note(format!("(skipped {op:?})"));
                    }
                    Err(e) => failure = Some(format!("step {i} ({op:?}): {e}")),
                }
                if case.trace.len() > before {
                    let line = case.trace.pop().unwrap();
                    case.trace.push(format!("#{i} {line}"));
                }
                if failure.is_some() {
                    break;
                }
            }
            if failure.is_none() {
                let end = match case.check(ALL).await {
                    Ok(()) => case.finish(&superuser).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = end {
                    failure = Some(format!("end of case: {e}"));
                }
            }
            if std::env::var("TENANTRY_MODEL_TRACE").is_ok() {
                eprintln!("case {}:\n  {}", sequences.get(), case.trace.join("\n  "));
            }
            sequences.set(sequences.get() + 1);
            if sequences.get() % 250 == 0 {
                eprintln!(
                    "model test: {} sequences, {} steps, {:.0} s",
                    sequences.get(),
                    steps.get(),
                    started.elapsed().as_secs_f64()
                );
            }
            if let Some(r) = case.m.resources.last() {
                *foreign.borrow_mut() = Some(r.id);
            }
            match failure {
                None => Ok(()),
                Some(f) => Err(TestCaseError::fail(format!(
                    "{f}\ntrace:\n  {}",
                    case.trace.join("\n  ")
                ))),
            }
        })
    });

    eprintln!(
        "model test: {} cases requested, {} sequences run (with shrinking), {} steps applied and checked, {} skipped, {:.1} s",
        cases(),
        sequences.get(),
        steps.get(),
        skipped.get(),
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "model test: {:.1} s of it in the after-step checks; outcomes the model predicted (and tenantry matched until any failure):",
        check_time.get().as_secs_f64()
    );
    for (what, n) in stats.borrow().iter() {
        eprintln!("  {n:>8}  {what}");
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, ops)) => {
            let ops: Vec<String> = ops.iter().map(|op| format!("{op:?}")).collect();
            panic!(
                "tenantry and the model disagree: {reason}\nminimal ops (tN, rN, roleN, kN: \
                 the N-th created, modulo how many exist; the trace shows what each resolved to):\n  {}",
                ops.join("\n  ")
            )
        }
        Err(TestError::Abort(reason)) => panic!("model test aborted: {reason}"),
    }
}
