/*
 * src/policy.c
 *
 * tco.policy_allows(account_id bigint, action text) -> boolean: service
 * control policies (DESIGN section 8, src/sql/55_policy.sql for the rules).
 *
 * One query, prepared once per backend and kept (the plan cache replans it
 * after DDL), fetches whether the account exists and every policy attached on
 * its path organization -> units -> account, ordered by path node.  The
 * decision is made here: glob matching of the action against each pattern
 * ("*" matches any characters, comparison ignores case, every other character
 * matches itself), an explicit deny anywhere wins, and every node with an
 * allow policy attached must have one that matches.  The same answer as
 * tco.policy_path + the rules, without a plpgsql call per level.
 *
 * Runs with the caller's rights, like the SQL version: row-level security and
 * privileges of the caller apply to the tables read.
 */
#include "postgres.h"

#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/lsyscache.h"

#include "tco.h"

PG_FUNCTION_INFO_V1(tco_policy_allows);

/*
 * Rows: (node, is_deny, actions).  node -1 is the marker row saying the
 * account exists; the organization is node 0, a unit is 1 + its height below
 * the account's unit... any distinct number per path node will do: only
 * "same node or not" matters.  Every operator is schema-qualified so that a
 * replan under a caller's search_path resolves the same objects.
 */
static const char *policy_query =
"WITH RECURSIVE m AS ("
"    SELECT mb.org_id, mb.unit_id FROM tco.member mb WHERE mb.account_id OPERATOR(pg_catalog.=) $1"
"), up (unit_id, parent_unit_id, height) AS ("
"    SELECT u.unit_id, u.parent_unit_id, 0 FROM tco.org_unit u JOIN m ON u.unit_id OPERATOR(pg_catalog.=) m.unit_id"
"    UNION ALL"
"    SELECT u.unit_id, u.parent_unit_id, up.height OPERATOR(pg_catalog.+) 1"
"      FROM tco.org_unit u JOIN up ON u.unit_id OPERATOR(pg_catalog.=) up.parent_unit_id"
"), path (node, target_type, target_id) AS ("
"    SELECT 0, 'organization'::pg_catalog.text, m.org_id FROM m"
"    UNION ALL"
"    SELECT up.height OPERATOR(pg_catalog.+) 2, 'unit'::pg_catalog.text, up.unit_id FROM up"
"    UNION ALL"
"    SELECT 1, 'account'::pg_catalog.text, $1 FROM m"
") "
"SELECT -1, false, NULL::pg_catalog.text[] FROM tco.account a WHERE a.account_id OPERATOR(pg_catalog.=) $1 "
"UNION ALL "
"SELECT path.node, sp.effect OPERATOR(pg_catalog.=) 'deny', sp.actions"
"  FROM path"
"  JOIN tco.policy_attachment pa ON pa.target_type OPERATOR(pg_catalog.=) path.target_type"
"                               AND pa.target_id OPERATOR(pg_catalog.=) path.target_id"
"  JOIN tco.service_policy sp ON sp.policy_id OPERATOR(pg_catalog.=) pa.policy_id "
"ORDER BY 1";

static SPIPlanPtr policy_plan = NULL;

/*
 * Does the (lower-cased) text s of length slen match the (lower-cased) glob
 * p of length plen?  '*' matches any run of bytes; every other byte matches
 * itself.  Byte-wise is right for UTF-8: a literal multibyte character can
 * only match the same character.  Classic greedy matching with one backtrack
 * point: O(slen * plen) at worst, no recursion.
 */
static bool
glob_match(const char *s, int slen, const char *p, int plen)
{
	int			si = 0,
				pi = 0,
				star = -1,
				mark = 0;

	while (si < slen)
	{
		if (pi < plen && p[pi] == '*')
		{
			star = pi++;
			mark = si;
		}
		else if (pi < plen && p[pi] == s[si])
		{
			pi++;
			si++;
		}
		else if (star >= 0)
		{
			pi = star + 1;
			si = ++mark;
		}
		else
			return false;
	}
	while (pi < plen && p[pi] == '*')
		pi++;
	return pi == plen;
}

/* Does one of the patterns of the array match the lower-cased action? */
static bool
actions_match(ArrayType *actions, const char *action, int action_len)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	bool		found = false;

	deconstruct_array(actions, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n && !found; i++)
	{
		text	   *t;
		char	   *pat;

		if (nulls[i])
			continue;			/* the table's CHECK forbids it; never matches */
		t = DatumGetTextPP(elems[i]);
		pat = str_tolower(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), DEFAULT_COLLATION_OID);
		found = glob_match(action, action_len, pat, strlen(pat));
		pfree(pat);
	}
	pfree(elems);
	pfree(nulls);
	return found;
}

Datum
tco_policy_allows(PG_FUNCTION_ARGS)
{
	int64		account_id;
	text	   *action_t;
	char	   *action;
	char	   *trimmed;
	int			action_len;
	Datum		arg;
	int			ret;
	bool		exists = false;
	bool		denied = false;
	bool		unallowed = false;
	int			cur_node = -2;
	bool		node_has_allow = false;
	bool		node_allows = false;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be NULL", "account_id"),
				 errhint("Pass a value for every required argument.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be NULL", "action"),
				 errhint("Pass a value for every required argument.")));
	account_id = PG_GETARG_INT64(0);
	action_t = PG_GETARG_TEXT_PP(1);

	/* btrim(action) = '': blank means spaces only, as btrim's default */
	trimmed = text_to_cstring(action_t);
	if (strspn(trimmed, " ") == strlen(trimmed))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("action must not be empty"),
				 errhint("Pass an action such as 'cvm:RunInstances'.")));
	pfree(trimmed);
	action = str_tolower(VARDATA_ANY(action_t), VARSIZE_ANY_EXHDR(action_t), DEFAULT_COLLATION_OID);
	action_len = strlen(action);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (policy_plan == NULL)
	{
		Oid			argtypes[1] = {INT8OID};
		SPIPlanPtr	plan = SPI_prepare(policy_query, 1, argtypes);

		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		policy_plan = plan;
	}
	arg = Int64GetDatum(account_id);
	ret = SPI_execute_plan(policy_plan, &arg, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "policy query failed: %s", SPI_result_code_string(ret));

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		node = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		bool		is_deny;
		Datum		actions;

		if (node == -1)
		{
			exists = true;
			continue;
		}
		if (node != cur_node)
		{
			/* close the previous node: it had allow policies, none matched */
			if (node_has_allow && !node_allows)
				unallowed = true;
			cur_node = node;
			node_has_allow = node_allows = false;
		}
		is_deny = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		actions = SPI_getbinval(tup, desc, 3, &isnull);
		if (isnull)
			continue;
		if (is_deny)
		{
			if (!denied && actions_match(DatumGetArrayTypeP(actions), action, action_len))
				denied = true;
		}
		else
		{
			node_has_allow = true;
			if (!node_allows && actions_match(DatumGetArrayTypeP(actions), action, action_len))
				node_allows = true;
		}
	}
	if (node_has_allow && !node_allows)
		unallowed = true;
	SPI_finish();

	if (!exists)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("account " INT64_FORMAT " does not exist", account_id),
				 errhint("Check the account id: it must exist before it is referenced.")));
	pfree(action);
	PG_RETURN_BOOL(!denied && !unallowed);
}
