-- Deadlines passed unmet and still unmet: counted every sweep for the rj_victims_code_deadlines gauge.
CREATE INDEX victim_clocks_breached ON victim_clocks (due_by) WHERE provided_at IS NULL AND breached_at IS NOT NULL;
