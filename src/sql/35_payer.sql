-- The payer of a bill line (R6, DESIGN section 3), in C: src/payer.c.

CREATE FUNCTION tco.trusteeship_effective_payer(account_id bigint, product_code text, at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'tco_trusteeship_effective_payer'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION tco.trusteeship_effective_payer(bigint, text, timestamptz) IS
'The account that pays a bill line of account_id for product_code whose period starts at `at`: the target of the latest trusteeship change whose effective instant for the product is <= at (frozen product: next cycle; otherwise the first granularity boundary at or after the change), else the account itself.';

CREATE FUNCTION tco.explain_payer(account_id bigint, product_code text, at timestamptz)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'tco_explain_payer'
LANGUAGE C STABLE STRICT PARALLEL RESTRICTED;
COMMENT ON FUNCTION tco.explain_payer(bigint, text, timestamptz) IS
'Why tco.trusteeship_effective_payer answers what it does: the change that applies (trusteeship, kind, instant, target), the rule that set its effective instant (frozen_product or granularity_boundary), and changes made but not yet effective at `at`.';
