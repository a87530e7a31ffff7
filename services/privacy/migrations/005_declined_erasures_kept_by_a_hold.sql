-- The privacy service no longer times a decliner's erasure itself: the consent service decides it, in case order
-- (rj.participant.erasure-due), and the privacy service erases on reading that. 004's table now keeps only what
-- a retention hold defers: erasures decided while the case was held, carried out when its last hold is lifted
-- (recorded_at: when the decline was recorded). No row of the old meaning was ever released.
COMMENT ON TABLE declined_erasures IS
    'Erasures of decliners that rj.participant.erasure-due made due while a retention hold stood on the case; '
    'carried out when the case''s last hold is lifted';
