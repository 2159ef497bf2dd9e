-- scripts/test_cluster.sh, corrections: the same corrections (tco.correct_bill_line,
-- README "After a cycle closes") on one server and through the router, which
-- routes each to the shard of the line's account.  Line ids differ between
-- the two (each shard draws its own), so the script gets them as variables:
-- :l_jan (a settled January line), :l_feb (a settled February line), :l_mar
-- (an open March line).  Ids are left out of the output.
\set ON_ERROR_STOP 1
\pset format unaligned
\pset footer off
SET client_min_messages = warning;
-- a settled line cancelled (a negative correction line), then corrected again
-- through the id of its correction line
SELECT tco.correct_bill_line(:l_jan, 0, 'meter fault') AS c1 \gset
SELECT :c1 <> :l_jan AS cancelled_by_a_correction_line;
SELECT tco.correct_bill_line(:c1, 2.25, 'recounted') NOT IN (:c1, :l_jan) AS recounted;
-- the amount is right already: nothing written (NULL)
SELECT tco.correct_bill_line(:l_jan, 2.25, 'recounted again') IS NULL AS unchanged;
-- a settled February line raised
SELECT tco.correct_bill_line(:l_feb, 99.5, 'repriced') IS NOT NULL AS repriced;
-- an open March line: updated in place, its own id returned
SELECT tco.correct_bill_line(:l_mar, 7.125, 'unit fix') = :l_mar AS updated_in_place;
