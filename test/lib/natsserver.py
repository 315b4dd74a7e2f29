"""Real nats-server processes for the tests of the NATS sink: one JetStream
server, or a JetStream cluster of several, all on 127.0.0.1 only (client and
cluster ports chosen free), each with its own store directory under a
temporary directory of the test, stopped and removed by stop().

Stream administration and reading go through test/lib/nats_admin.js and
test/examples/nats_consumer.js (Node's official nats client, from
test/examples/node_modules: npm ci there first, see ensure_node_nats()).

    from natsserver import NatsServer, NatsCluster, NatsAdmin
    srv = NatsServer(token="s3cret").start()
    srv.url                       # nats://127.0.0.1:PORT
    srv.kill(); srv.start()       # same port, same store
    cl = NatsCluster(3).start(); cl.urls
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "examples")
NODE_MODULES = os.path.join(EXAMPLES, "node_modules")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_node_nats():
    """test/examples/node_modules with the nats package (npm ci if missing)."""
    if not os.path.isdir(os.path.join(NODE_MODULES, "nats")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=EXAMPLES, check=True)


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class NatsServer:
    """One nats-server with JetStream on 127.0.0.1.  token: clients must
    give it; tls: (cert_file, key_file) to speak TLS only; cluster: set by
    NatsCluster."""

    def __init__(self, name="n1", token=None, tls=None, basedir=None):
        self.name = name
        self.token = token
        self.tls = tls
        self.own_dir = basedir is None
        self.dir = basedir or tempfile.mkdtemp(prefix="pg_notifier_nats.")
        self.port = _free_port()
        self.cluster_port = None
        self.routes = []
        self.cluster_name = None
        self.proc = None
        self.log_path = os.path.join(self.dir, f"{name}.log")

    @property
    def url(self):
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    def _config(self):
        store = os.path.join(self.dir, f"{self.name}-store")
        lines = [f'server_name: "{self.name}"',
                 f"listen: 127.0.0.1:{self.port}",
                 "jetstream {",
                 f'  store_dir: "{store}"',
                 "  max_memory_store: 64MB",
                 "  max_file_store: 2GB",
                 "}"]
        if self.token:
            lines += ["authorization {", f'  token: "{self.token}"', "}"]
        if self.tls:
            lines += ["tls {", f'  cert_file: "{self.tls[0]}"', f'  key_file: "{self.tls[1]}"', "}"]
        if self.cluster_port:
            lines += ["cluster {",
                      f'  name: "{self.cluster_name}"',
                      f"  listen: 127.0.0.1:{self.cluster_port}",
                      "  no_advertise: true",
                      "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes) + "]",
                      "}"]
        path = os.path.join(self.dir, f"{self.name}.conf")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, wait=True):
        conf = self._config()
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(["nats-server", "-c", conf], stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not _listening(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nats-server {self.name} not listening on {self.port}: {self.tail()}")
            time.sleep(0.05)

    def tail(self, n=20):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def kill(self):
        """SIGKILL, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class NatsCluster:
    """n JetStream servers clustered over loopback routes."""

    def __init__(self, n=3, name="pgn"):
        self.dir = tempfile.mkdtemp(prefix="pg_notifier_nats_cluster.")
        self.nodes = [NatsServer(name=f"n{i + 1}", basedir=self.dir) for i in range(n)]
        ports = [_free_port() for _ in self.nodes]
        for node, port in zip(self.nodes, ports):
            node.cluster_port = port
            node.cluster_name = name
            node.routes = [p for p in ports if p != port]

    @property
    def urls(self):
        return ",".join(n.url for n in self.nodes)

    def start(self):
        for n in self.nodes:
            n.start(wait=False)
        for n in self.nodes:
            n.wait_listening()
        return self

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def cleanup(self):
        for n in self.nodes:
            n.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NatsAdmin:
    """Streams, through test/lib/nats_admin.js (Node's nats client)."""

    def __init__(self, urls, token=None, ca=None):
        ensure_node_nats()
        self.urls = urls
        self.token = token
        self.ca = ca

    def run(self, *args, timeout=60):
        env = dict(os.environ, NODE_PATH=NODE_MODULES, NATS_URLS=self.urls)
        if self.token:
            env["NATS_TOKEN"] = self.token
        if self.ca:
            env["NATS_CA"] = self.ca
        p = subprocess.run(["node", os.path.join(HERE, "nats_admin.js"), *args], env=env,
                           capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"nats_admin.js {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-800:]}")
        return p.stdout

    def add_stream(self, name, subjects, replicas=1):
        return json.loads(self.run("add", name, ",".join(subjects), str(replicas)))

    def delete_stream(self, name):
        self.run("delete", name)

    def info(self, name):
        """{"messages": n, "leader": "n2", "replicas": [...]} or None when no such stream."""
        out = self.run("info", name).strip()
        return json.loads(out) if out else None

    def messages(self, name, count=None, idle_ms=2000):
        """Every message of the stream (subject, seq, headers {name: value}, data),
        through the example consumer test/examples/nats_consumer.js."""
        env = dict(os.environ, NATS_URLS=self.urls, NATS_STREAM=name,
                   NATS_IDLE_MS=str(idle_ms))
        if count is not None:
            env["NATS_COUNT"] = str(count)
        if self.token:
            env["NATS_TOKEN"] = self.token
        if self.ca:
            env["NATS_CA"] = self.ca
        p = subprocess.run(["node", os.path.join(EXAMPLES, "nats_consumer.js"), "--json"], env=env,
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"nats_consumer.js: exit {p.returncode}: {p.stderr.strip()[-800:]}")
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
