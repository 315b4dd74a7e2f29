#!/usr/bin/python3
"""make deb, end to end with dpkg: the package is built, installed in place of
`make install`, the pg_regress suite (REGRESS and ISOLATION, make
installcheck) runs against a cluster of its own started from the installed
PostgreSQL's binaries, and the package is removed: no file of it remains.

  [build]    make deb PG_CONFIG=<Debian's pg_config>: the control file names
             postgresql-15-pg-notifier, the version of pg_notifier.control,
             Depends postgresql-15 and libcurl4 (libnats3.4 only if the module
             links libnats); the files are the module and the extension's
             control and SQL scripts, under /usr;
  [install]  dpkg -i; dpkg -L lists them; the module on disk is the package's
             (md5sums);
  [regress]  initdb + a server with shared_preload_libraries = pg_notifier from
             <root>/usr/lib/postgresql/15/bin, make installcheck against it
             with that pg_config: every test passes;
  [remove]   dpkg -r: the package is not installed and none of its files is
             left.

This installs into the real /usr (dpkg's own database).  It refuses to run
when the package is installed already; the files of a make install that are
there (test/run's, with Debian's pg_config) are kept aside first and put back
after dpkg -r, so that the tests after it find them; it always removes what it
installed.  PG_NOTIFIER_DEB_ROOT=<dir> installs instead with
dpkg --instdir=<dir> and a scratch --admindir (--force-depends), into a
relocated copy of PostgreSQL in <dir> whose binaries run the suite: a
developer's test on a shared machine.  Debian's python3:
    /usr/bin/python3 test/integration/test_deb.py
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from itlib import Checks, Step, TestFailure, log, main  # noqa: E402
import owncluster  # noqa: E402

NAME = "test_deb"
TIMEOUT = int(os.environ.get("PG_NOTIFIER_TEST_TIMEOUT", "280"))
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PG_MAJOR = os.environ.get("PG_MAJOR", "15")
DEBIAN_PG_CONFIG = f"/usr/lib/postgresql/{PG_MAJOR}/bin/pg_config"
PACKAGE = f"postgresql-{PG_MAJOR}-pg-notifier"
ROOT = os.environ.get("PG_NOTIFIER_DEB_ROOT") or "/"


def run(cmd, timeout=240, env=None, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise TestFailure(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
    return p


class Ctx(Checks):
    def __init__(self):
        super().__init__()
        self.deb = None
        self.files = []           # the package's regular files, absolute (/usr/...)
        self.md5 = {}
        self.admindir = None      # scratch dpkg database (PG_NOTIFIER_DEB_ROOT)
        self.installed = False
        self.backup = None        # where the files of a make install were kept
        self.kept = []

    def on_disk(self, path):
        return os.path.join(ROOT, path.lstrip("/"))

    def dpkg(self, *args, check=True):
        cmd = ["dpkg"]
        if ROOT != "/":
            cmd += [f"--instdir={ROOT}", f"--admindir={self.admindir}", "--force-depends"]
        return run(cmd + list(args), check=check)

    def status(self):
        p = self.dpkg("-s", PACKAGE, check=False)
        for line in p.stdout.splitlines():
            if line.startswith("Status:"):
                return line.split(":", 1)[1].strip()
        return "not-installed"


def control_fields(text):
    out = {}
    for line in text.splitlines():
        if line and not line.startswith(" ") and ":" in line:
            k, v = line.split(":", 1)
            out[k.strip()] = v.strip()
    return out


def package_tar(deb, part, *tar_args):
    """tar tar_args... of one part of the package (--fsys-tarfile, --ctrl-tarfile)."""
    data = subprocess.run(["dpkg-deb", part, deb], capture_output=True, check=True).stdout
    return subprocess.run(["tar", *tar_args], input=data, capture_output=True,
                          check=True).stdout.decode()


def step_build(ctx):
    version = [line.split("'")[1] for line in open(os.path.join(REPO, "pg_notifier.control"))
               if line.startswith("default_version")][0]
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    deb = os.path.join(REPO, f"{PACKAGE}_{version}_{arch}.deb")
    if os.path.exists(deb):
        os.unlink(deb)
    run(["make", "-C", REPO, "-s", "--no-print-directory", "deb", f"PG_CONFIG={DEBIAN_PG_CONFIG}"])
    if not os.path.exists(deb):
        raise TestFailure(f"make deb made no {os.path.basename(deb)}")
    ctx.deb = deb
    fields = control_fields(run(["dpkg-deb", "-f", deb]).stdout)
    # the module as built: does it link libnats?
    links_nats = "libnats" in run(["readelf", "-d", os.path.join(REPO, "pg_notifier.so")]).stdout
    depends = [d.strip() for d in fields.get("Depends", "").split(",")]
    want = [f"postgresql-{PG_MAJOR}", "libcurl4"] + (["libnats3.4"] if links_nats else [])
    ctx.check(fields.get("Package") == PACKAGE and fields.get("Version") == version
              and fields.get("Architecture") == arch, f"control: {fields}")
    ctx.check(sorted(depends) == sorted(want), f"Depends {depends}, expected {want}")
    ctx.files = sorted("/" + n[2:] for n in package_tar(deb, "--fsys-tarfile", "-tf", "-")
                       .split() if not n.endswith("/"))
    libdir = f"/usr/lib/postgresql/{PG_MAJOR}/lib"
    extdir = f"/usr/share/postgresql/{PG_MAJOR}/extension"
    for need in (f"{libdir}/pg_notifier.so", f"{extdir}/pg_notifier.control",
                 f"{extdir}/pg_notifier--0.1.sql", f"{extdir}/pg_notifier--0.1--0.2.sql"):
        ctx.check(need in ctx.files, f"the package has no {need}")
    stray = [f for f in ctx.files if not (f.startswith(f"{libdir}/") or f.startswith(f"{extdir}/"))]
    ctx.check(not stray, f"files outside the module and extension directories: {stray[:5]}")
    sums = package_tar(deb, "--ctrl-tarfile", "-xOf", "-", "./md5sums")
    ctx.md5 = {"/" + line.split(None, 1)[1].strip(): line.split()[0] for line in sums.splitlines()}
    log(f"{os.path.basename(deb)}: Depends {', '.join(depends)}; {len(ctx.files)} files")
    ctx.result(f"make deb: {os.path.basename(deb)}, Depends {', '.join(depends)}")


def step_install(ctx):
    if ROOT != "/":
        ctx.admindir = tempfile.mkdtemp(prefix="pg_notifier_dpkg.")
        os.makedirs(os.path.join(ctx.admindir, "info"))
        os.makedirs(os.path.join(ctx.admindir, "updates"))
        open(os.path.join(ctx.admindir, "status"), "w").close()
        log(f"dpkg --instdir={ROOT} --admindir={ctx.admindir} (PG_NOTIFIER_DEB_ROOT)")
    if ctx.status().startswith("install ok"):
        raise TestFailure(f"{PACKAGE} is installed already: dpkg -r {PACKAGE} first")
    present = [f for f in ctx.files if os.path.lexists(ctx.on_disk(f))]
    if present:
        # a make install (test/run's build_install): kept aside, put back at the end
        ctx.backup = tempfile.mkdtemp(prefix="pg_notifier_deb_backup.")
        for f in present:
            dst = os.path.join(ctx.backup, f.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(ctx.on_disk(f), dst)
        ctx.kept = present
        log(f"{len(present)} files of a make install in {ROOT} kept aside in {ctx.backup}; "
            "put back after dpkg -r")
    ctx.installed = True          # from here on, cleanup removes it
    ctx.dpkg("-i", ctx.deb)
    ctx.check(ctx.status() == "install ok installed", f"dpkg -s: {ctx.status()}")
    listed = set(ctx.dpkg("-L", PACKAGE).stdout.split())
    missing = [f for f in ctx.files if f not in listed]
    ctx.check(not missing, f"dpkg -L lacks {missing[:4]}")
    bad = []
    for f, want in ctx.md5.items():
        with open(ctx.on_disk(f), "rb") as fh:
            if hashlib.md5(fh.read()).hexdigest() != want:
                bad.append(f)
    ctx.check(not bad, f"files on disk differ from the package's: {bad[:4]}")
    ctx.result(f"dpkg -i: {len(ctx.files)} files installed in {ROOT}")


def step_regress(ctx):
    bindir = os.path.join(ROOT, f"usr/lib/postgresql/{PG_MAJOR}/bin")
    pg_config = os.path.join(bindir, "pg_config")
    libdir = run([pg_config, "--pkglibdir"]).stdout.strip()
    so = ctx.on_disk(f"/usr/lib/postgresql/{PG_MAJOR}/lib/pg_notifier.so")
    ctx.check(os.path.realpath(os.path.join(libdir, "pg_notifier.so")) == os.path.realpath(so),
              f"{pg_config} loads modules from {libdir}, not where the package put {so}")
    os.environ["PG_BIN"] = bindir
    owncluster.forget_libpq_environment()
    cl = owncluster.Cluster("deb", "pg_notifier.databases = 'postgres'\n"
                                   "synchronous_commit = off\nmax_prepared_transactions = 4\n")
    try:
        cl.initdb()
        cl.start()
        env = dict(os.environ, PGHOST=cl.dir, PGPORT=str(cl.port), PGUSER="postgres")
        for f in ("results", "output_iso", "regression.diffs", "regression.out"):
            path = os.path.join(REPO, f)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)
        p = run(["make", "-C", REPO, "--no-print-directory", "installcheck",
                 f"PG_CONFIG={pg_config}"], timeout=600, env=env, check=False)
        summary = [line for line in p.stdout.splitlines() if "tests passed" in line
                   or "failed" in line and "test" in line]
        if p.returncode != 0:
            diffs = os.path.join(REPO, "regression.diffs")
            head = open(diffs).read()[:3000] if os.path.exists(diffs) else ""
            raise TestFailure(f"make installcheck against the package: exit {p.returncode}\n"
                              f"{p.stdout[-2000:]}{p.stderr[-1000:]}\n{head}")
        log(f"make installcheck with {pg_config}: {'; '.join(summary)}")
        ctx.result(f"the pg_regress suite passed against the package ({'; '.join(summary)})")
    finally:
        cl.cleanup()


def step_remove(ctx):
    ctx.dpkg("-r", PACKAGE)
    ctx.installed = False
    left = [f for f in ctx.files if os.path.lexists(ctx.on_disk(f))]
    ctx.check(not left, f"files left after dpkg -r: {left[:5]}")
    st = ctx.status()
    ctx.check(not st.startswith("install"), f"after dpkg -r, dpkg -s says {st!r}")
    ctx.result(f"dpkg -r: not installed, none of its {len(ctx.files)} files left")


def cleanup(ctx):
    errors = []
    if ctx.installed:
        p = ctx.dpkg("-r", PACKAGE, check=False)
        if p.returncode != 0:
            errors.append(f"[cleanup] dpkg -r {PACKAGE}: {p.stderr.strip()}")
    for f in ctx.kept:
        try:
            dst = ctx.on_disk(f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(ctx.backup, f.lstrip("/")), dst)
        except OSError as ex:
            errors.append(f"[cleanup] putting back {f}: {ex}")
    if ctx.kept:
        log(f"the {len(ctx.kept)} files of the make install put back")
    for d in (ctx.admindir, ctx.backup):
        if d:
            shutil.rmtree(d, ignore_errors=True)
    return errors


STEPS = [
    Step("build", "make deb", step_build, needed=True),
    Step("install", "dpkg -i", step_install, needed=True),
    Step("regress", "the pg_regress suite against the installed package", step_regress),
    Step("remove", "dpkg -r leaves nothing", step_remove),
]


if __name__ == "__main__":
    main(NAME, STEPS, Ctx(), cleanup=cleanup, timeout=TIMEOUT, keep_going=True)
