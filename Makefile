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

REGRESS = setup options payload types oversize identifiers partitions errors coalesce routes webhooks outbox capture_ddl watch_api nolost hardening auto append_path replay disable_route route_options queue_read queue_plans max_per_second backfill nats upgrade
REGRESS_OPTS = --inputdir=. --outputdir=.
ISOLATION = commit_order savepoint_rollback concurrent_pop watch_concurrent drop_extension auto_route concurrent_read

PG_CPPFLAGS = -I$(srcdir)/src -Werror -Wall -Wmissing-prototypes
SHLIB_LINK = -lcurl -lnats

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies unless PostgreSQL was configured with
# --enable-depend: rebuild everything when any of our headers changes.
$(OBJS) $(OBJS:.o=.bc): $(wildcard src/*.h src/*/*.h src/*/*/*.h)

# make deb: the Debian package postgresql-15-pg-notifier_<version>_<arch>.deb,
# from a staged `make install DESTDIR=<a temporary directory>`; there is no
# debian/ folder: the control file is written into the staging directory.
# The paths come from PG_CONFIG: build it with Debian's pg_config (a
# relocated PostgreSQL would give the package its paths).  Depends on
# libnats3.4 only when the module links libnats.
comma := ,
DEB_PG_MAJOR = $(shell $(PG_CONFIG) --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
DEB_VERSION = $(shell sed -nE "s/^default_version = '(.*)'/\1/p" $(srcdir)/$(EXTENSION).control)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB_NAME = postgresql-$(DEB_PG_MAJOR)-pg-notifier
DEB_FILE = $(DEB_NAME)_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_DEPENDS = postgresql-$(DEB_PG_MAJOR), libcurl4$(if $(findstring -lnats,$(SHLIB_LINK)),$(comma) libnats3.4)

.PHONY: deb
deb: all
	@case "$$($(PG_CONFIG) --pkglibdir)" in /usr/lib/postgresql/*) ;; \
	  *) echo "make deb: $(PG_CONFIG) installs into $$($(PG_CONFIG) --pkglibdir), not Debian's" \
	       "/usr/lib/postgresql; give PG_CONFIG=/usr/lib/postgresql/$(DEB_PG_MAJOR)/bin/pg_config" >&2; \
	     exit 1 ;; \
	esac
	@set -e; stage=$$(mktemp -d); trap 'rm -rf "$$stage"' EXIT; chmod 755 "$$stage"; \
	$(MAKE) --no-print-directory -s install DESTDIR="$$stage" >/dev/null; \
	mkdir -m 755 "$$stage/DEBIAN"; \
	(cd "$$stage" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$$stage/DEBIAN/md5sums"; \
	printf '%s\n' "Package: $(DEB_NAME)" "Version: $(DEB_VERSION)" "Architecture: $(DEB_ARCH)" \
	  "Maintainer: pg_notifier developers <pg_notifier@localhost>" \
	  "Installed-Size: $$(du -sk --exclude=DEBIAN "$$stage" | cut -f1)" \
	  "Depends: $(DEB_DEPENDS)" "Section: database" "Priority: optional" \
	  "Description: table changes as JSON events for PostgreSQL $(DEB_PG_MAJOR)" \
	  " pg_notifier turns table changes into deduplicated JSON events, sent with" \
	  " NOTIFY and forwarded by a background worker to queues and webhooks." \
	  " Load it with shared_preload_libraries = 'pg_notifier', then" \
	  " CREATE EXTENSION pg_notifier in each database." >"$$stage/DEBIAN/control"; \
	dpkg-deb --root-owner-group --build "$$stage" $(DEB_FILE) >/dev/null; \
	echo "built $(DEB_FILE)"
