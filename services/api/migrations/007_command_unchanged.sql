-- A command its owning service took and found already so (consent given again, say) is answered
-- rj.command.no-change: its outcome is "unchanged", no longer "pending" for ever.
ALTER TABLE command_answers DROP CONSTRAINT command_answers_status_check;
ALTER TABLE command_answers ADD CONSTRAINT command_answers_status_check
    CHECK (status IN ('accepted', 'rejected', 'already_handled', 'unchanged'));
