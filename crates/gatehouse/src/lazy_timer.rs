//! One timer for a connection's successive deadlines. A timer of its own per wait would insert
//! and remove a timer-wheel entry each time; this one is moved only when it must fire earlier
//! than it is set to, or when it fired for a deadline that has since moved on.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// Makes `timer` fire no later than `deadline`.
pub(crate) fn pull_in(timer: &mut Pin<Box<Sleep>>, deadline: Instant) {
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
}

/// Ready once `deadline` has passed; a timer that fires earlier is moved to `deadline`.
pub(crate) fn poll_until(
    timer: &mut Pin<Box<Sleep>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    pull_in(timer, deadline);
    while timer.as_mut().poll(cx).is_ready() {
        if Instant::now() >= deadline {
            return Poll::Ready(());
        }
        timer.as_mut().reset(deadline);
    }
    Poll::Pending
}
