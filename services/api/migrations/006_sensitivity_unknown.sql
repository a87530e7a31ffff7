-- Whether a case is sensitive is known only once screening said so (rj.case.accepted: its sensitivity reasons, or a
-- specialist required). Until then it is unknown (NULL), and unknown counts as sensitive wherever it matters: a
-- participant's withdraw link must not work on a case whose screening the read model has not seen yet, since whoever
-- harmed the participant may hold their phone. The old default (false) said "not sensitive" before anyone knew.
ALTER TABLE cases ALTER COLUMN sensitive DROP NOT NULL, ALTER COLUMN sensitive DROP DEFAULT;

-- Rows made before this: false without an acceptance in the case's timeline was the default, not a screening.
UPDATE cases c SET sensitive = NULL
 WHERE c.sensitive IS FALSE
   AND NOT EXISTS (SELECT 1 FROM timeline t WHERE t.case_id = c.case_id AND t.event_type = 'rj.case.accepted');
