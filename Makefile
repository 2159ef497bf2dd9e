# tco — PGXS build.  See README.md ("Development") for the layout.
# tco_cluster (DESIGN section 10, README "Running on several servers") is a
# second extension, for the router database: SQL only, built from cluster/sql/*.sql.
EXTENSION = tco tco_cluster
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" tco.control)

MODULE_big = tco
# One object per C file in src/: a file per concept (cycle type, caches, payer, settlement ...).
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
PGFILEDESC = "tco - cloud organizations, trusteeship and settlement"

# The install script is generated from one unversioned source split per concept
# (src/sql/NN_concept.sql, concatenated in name order).  Released versions are
# frozen; upgrades ship as one-step sql/tco--X--Y.sql scripts.
DATA_built = tco--$(EXTVERSION).sql tco_cluster--$(CLUSTER_VERSION).sql
CLUSTER_VERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" tco_cluster.control)
DATA = $(sort $(wildcard upgrade/tco--*.sql) $(wildcard upgrade/tco_cluster--*.sql))

# pg_regress: sql/NAME.sql + expected/NAME.out; isolation: specs/NAME.spec + expected/NAME.out.
REGRESS = $(sort $(patsubst sql/%.sql,%,$(wildcard sql/*.sql)))
REGRESS_OPTS = --dbname=tco_regress
ISOLATION = $(sort $(patsubst specs/%.spec,%,$(wildcard specs/*.spec)))
ISOLATION_OPTS = --dbname=tco_isolation

PG_CPPFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Werror
PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Every object is rebuilt when a header of src/ changes (PGXS tracks no header
# dependencies without --enable-depend): an object compiled against an older
# struct layout would crash the backend.
$(OBJS): $(wildcard src/*.h)

tco--$(EXTVERSION).sql: $(sort $(wildcard src/sql/*.sql))
	( echo '-- generated from src/sql/*.sql by make: do not edit'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION tco" to load this file. \quit'; \
	  for f in $^; do echo; echo "-- ==== $$f"; cat $$f; done ) > $@

tco_cluster--$(CLUSTER_VERSION).sql: $(sort $(wildcard cluster/sql/*.sql))
	( echo '-- generated from cluster/sql/*.sql by make: do not edit'; \
	  printf '%s\n' '\echo Use "CREATE EXTENSION tco_cluster" to load this file. \quit'; \
	  for f in $^; do echo; echo "-- ==== $$f"; cat $$f; done ) > $@

.PHONY: demo check-all bench
demo:
	bash scripts/demo.sh
check-all:
	bash scripts/test.sh
bench:
	bash scripts/bench.sh
