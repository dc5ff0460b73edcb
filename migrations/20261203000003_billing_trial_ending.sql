-- The `trial.ending` announcement: billing's sweep (subgraphs/billing/src/trial_ending.rs)
-- writes one `trial.ending` event per trial whose end is near, in the same transaction as it
-- sets `trial_ending_announced_at`; a trial with it set is never announced again. Forward
-- only: trials already near their end when this runs are announced by the first sweep.
ALTER TABLE billing.subscriptions ADD COLUMN trial_ending_announced_at timestamptz;

-- What the sweep looks for: trials still running and not yet announced, by their end.
CREATE INDEX subscriptions_trials_to_announce ON billing.subscriptions (trial_end)
    WHERE source = 'trial' AND status = 'trialing' AND trial_ending_announced_at IS NULL;
