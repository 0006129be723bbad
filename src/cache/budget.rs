//! Byte budgets as semaphores counted in KiB (`fill_memory`, the disk tier's writes): a
//! holder takes what its bytes need before it holds them, and gives it back by dropping
//! the permit.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `bytes` in KiB, rounded up.
pub(crate) fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// `bytes` of `budget`, if that much is free now.
pub(crate) fn kib_permit(budget: &Arc<Semaphore>, bytes: u64) -> Result<OwnedSemaphorePermit, ()> {
    let n = u32::try_from(kib(bytes).max(1)).map_err(|_| ())?;
    budget.clone().try_acquire_many_owned(n).map_err(|_| ())
}

/// Extends `held` (permits of `budget`) to cover `bytes`; `false` if the budget has no
/// room for that much now.
pub(crate) fn grow(
    held: &mut Option<OwnedSemaphorePermit>,
    budget: &Arc<Semaphore>,
    bytes: u64,
) -> bool {
    let have = held.as_ref().map_or(0, |p| p.num_permits() as u64);
    let want = kib(bytes).max(1);
    if want <= have {
        return true;
    }
    match kib_permit(budget, (want - have) * 1024) {
        Ok(more) => {
            match held {
                Some(p) => p.merge(more),
                None => *held = Some(more),
            }
            true
        }
        Err(()) => false,
    }
}

/// Gives back what `held` has beyond `bytes`.
pub(crate) fn shrink(held: &mut Option<OwnedSemaphorePermit>, bytes: u64) {
    if let Some(p) = held {
        let keep = kib(bytes) as usize;
        if p.num_permits() > keep {
            drop(p.split(p.num_permits() - keep));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_grows_and_shrinks_in_kib() {
        let budget = Arc::new(Semaphore::new(10));
        let mut held = None;
        assert!(grow(&mut held, &budget, 1));
        assert!(grow(&mut held, &budget, 4 * 1024 + 1));
        assert_eq!(held.as_ref().unwrap().num_permits(), 5);
        assert_eq!(budget.available_permits(), 5);
        assert!(!grow(&mut held, &budget, 11 * 1024), "more than the budget");
        assert_eq!(held.as_ref().unwrap().num_permits(), 5, "nothing taken");
        shrink(&mut held, 2 * 1024);
        assert_eq!(budget.available_permits(), 8);
        drop(held);
        assert_eq!(budget.available_permits(), 10);
    }
}
