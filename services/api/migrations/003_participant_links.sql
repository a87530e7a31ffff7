-- Participants' withdraw links (services/api/links.py). A link is single-use: its id is recorded here in the
-- transaction that sends the withdrawal, so a second use (or two at once) finds it taken and sends nothing.
CREATE TABLE participant_links_used (
    link_id text PRIMARY KEY,
    case_id text NOT NULL,
    used_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX participant_links_used_case ON participant_links_used (case_id);

-- Staff's choice per case to turn the links on or off; without a row, a case allows them unless it is
-- sensitive (api.cases.sensitive). The reason is staff's note on the decision, in clear.
CREATE TABLE participant_link_settings (
    case_id    text PRIMARY KEY,
    enabled    boolean NOT NULL,
    changed_by text NOT NULL,
    changed_at timestamptz NOT NULL,
    reason     text
);
