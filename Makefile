# pg_notifier -- PGXS build
#
#   make && make install          build and install into the pg_config found
#   make installcheck             run the pg_regress suite against a running server
#   test/run                      everything, from a fresh machine (see README)

EXTENSION = pg_notifier
MODULE_big = pg_notifier
SRCS = $(sort $(wildcard src/*.c src/*/*.c src/*/*/*.c))
OBJS = $(SRCS:.c=.o)
DATA = $(wildcard src/$(EXTENSION)--*.sql)
PGFILEDESC = "pg_notifier - table changes as JSON events"

REGRESS = setup options payload types oversize identifiers partitions errors coalesce routes webhooks outbox capture_ddl watch_api nolost hardening auto append_path replay nats upgrade
REGRESS_OPTS = --inputdir=. --outputdir=.
ISOLATION = commit_order savepoint_rollback concurrent_pop watch_concurrent drop_extension auto_route

PG_CPPFLAGS = -I$(srcdir)/src -Werror -Wall -Wmissing-prototypes
SHLIB_LINK = -lcurl -lnats

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies unless PostgreSQL was configured with
# --enable-depend: rebuild everything when any of our headers changes.
$(OBJS) $(OBJS:.o=.bc): $(wildcard src/*.h src/*/*.h src/*/*/*.h)
