#!/usr/bin/python3
"""test/bench/charts.py OUT_DIR CHART_DIR -- PNG charts (gnuplot) from the
Markdown reports the benchmarks write into test/bench/out/*.md.

  trigger-ratios.png   bulk insert time of every trigger variant ÷ no trigger
                       (triggers.md, the table with "bulk insert ms")
  trigger-tps.png      8-client single-row INSERT tps of every variant ÷ no
                       trigger (the same table, "pgbench tps")
  throughput.png       events/s: producer alone, worker → queue and LISTEN
                       client (worker.md); webhook unbatched and batched
                       (webhook.md)
  webhook-latency.png  commit → 2xx p50 / p90 / p99 / p99.9 / max (webhook.md)

A chart whose table is missing or unreadable is skipped with a message on
stderr; this script never fails because of the numbers.  It exits non-zero
only when gnuplot itself is missing or fails.  It prints the names of the
charts it wrote, one a line, on stdout.
"""
import os
import re
import subprocess
import sys


def tables(path):
    """Every Markdown table of the file: a list of (header cells, rows)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out, cur = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            cur.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif cur:
            if len(cur) >= 2 and set("".join(cur[1])) <= set("-: "):
                out.append((cur[0], cur[2:]))
            cur = []
    return out


def find_table(path, *needles):
    """The first table whose header has a cell containing each needle."""
    for head, rows in tables(path):
        if all(any(n in h for h in head) for n in needles):
            return head, rows
    return None


def num(cell):
    """The first number of a cell ("1,234 events/s", "1.39×", "**0.56**")."""
    m = re.search(r"-?\d[\d,]*(?:\.\d+)?", cell or "")
    return float(m.group(0).replace(",", "")) if m else None


def col(head, needle, start=0):
    for i in range(start, len(head)):
        if needle in head[i]:
            return i
    return None


def machine(path):
    """'nproc 2 · RAM 23.5 GiB · PostgreSQL 15.20' from the report's date line."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if "nproc" in line:
                    parts = [p.strip() for p in line.split("·")]
                    keep = [p for p in parts if p.startswith(("nproc", "RAM"))]
                    pg = [p.split(" (")[0] for p in parts if p.startswith("PostgreSQL")]
                    return ", ".join(keep + pg)
    except OSError:
        pass
    return ""


def q(s):
    return '"' + s.replace('"', "'") + '"'


def skip(chart, why):
    print(f"charts: skipping {chart}: {why}", file=sys.stderr)


PREAMBLE = """\
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.8
set grid ytics
set key off
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
"""


def bars(title, ylabel, labels, values, fmt, rotate=False, extra=""):
    """One panel of bars with the value printed above each."""
    data = "\n".join(f"{q(l)} {v}" for l, v in zip(labels, values))
    name = "$d%d" % abs(hash(title))
    s = f"{name} << EOD\n{data}\nEOD\n"
    s += f"set title {q(title)}\nset ylabel {q(ylabel)}\n"
    s += "set xtics rotate by -30 left\n" if rotate else "set xtics norotate\n"
    s += extra
    s += (f"plot {name} using 2:xtic(1) lc rgb '#4477aa', "
          f"'' using ($0):2:(sprintf({q(fmt)}, $2)) with labels offset 0,0.8 font ',9'\n")
    return s


def render(gp, png, script, size):
    full = f"set terminal {TERM} size {size} noenhanced font ',10'\nset output {q(png)}\n{PREAMBLE}{script}unset output\n"
    r = subprocess.run([gp], input=full, text=True, capture_output=True)
    if r.returncode != 0 or not os.path.exists(png) or os.path.getsize(png) == 0:
        sys.stderr.write(r.stderr)
        raise SystemExit(f"charts: gnuplot failed for {png}")


def trigger_ratio_chart(out, charts, png_name, value_col, title):
    """One bar per variant of triggers.md: the ratio column next to value_col."""
    md = os.path.join(out, "triggers.md")
    t = find_table(md, value_col, "ratio vs no trigger")
    if not t:
        return skip(png_name, f"no '{value_col}' table in {md}")
    head, rows = t
    c = col(head, "ratio vs no trigger", col(head, value_col))
    labels, values = [], []
    for r in rows:
        v = num(r[c]) if c is not None and c < len(r) else None
        if v is not None:
            labels.append(r[0])
            values.append(v)
    if not values:
        return skip(png_name, f"no ratios next to '{value_col}'")
    m = machine(md)
    rows_m = re.search(r"INSERT … SELECT of (\d+) rows", open(md, encoding="utf-8").read())
    if rows_m:
        title = title.replace("100k", f"{int(rows_m.group(1)):,}")
    extra = "set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lc rgb '#aa3333'\n"
    script = bars(title + (f"\\nmeasured on {m}" if m else ""),
                  "ratio vs no trigger", labels, values, "%.2f×", rotate=True, extra=extra)
    png = os.path.join(charts, png_name)
    # the labels are rotated to the right: room for the last ones (outbox variants)
    render(GP, png, "set bmargin 13\nset rmargin 40\n" + script, "1300,700")
    return png


def chart_triggers(out, charts):
    return trigger_ratio_chart(
        out, charts, "trigger-ratios.png", "bulk insert ms",
        "Bulk INSERT of 100k rows: time ÷ time without a trigger (lower is better)")


def chart_trigger_tps(out, charts):
    return trigger_ratio_chart(
        out, charts, "trigger-tps.png", "pgbench tps",
        "8 clients, single-row INSERTs: tps ÷ tps without a trigger (higher is better)")


def chart_throughput(out, charts):
    panels = []
    wmd = os.path.join(out, "worker.md")
    t = find_table(wmd, "worker → queue events/s", "LISTEN client events/s")
    if t:
        head, rows = t
        cp, cw, cl = (col(head, "producer alone events/s"),
                      col(head, "worker → queue events/s"), col(head, "LISTEN client events/s"))
        labels, values = [], []
        for r in rows:
            for c, what in ((cp, "producer alone"), (cw, "worker → queue"), (cl, "LISTEN client")):
                v = num(r[c]) if c is not None and c < len(r) else None
                if v is not None:
                    labels.append(f"{r[0]}: {what}")
                    values.append(v)
        if values:
            m = machine(wmd)
            panels.append(bars("Worker into notifier.queue vs a LISTEN client"
                               + (f"\\nmeasured on {m}" if m else ""),
                               "events/s (higher is better)", labels, values, "%.0f", rotate=True))
    if not panels:
        skip("throughput.png (worker panel)", f"no throughput table in {wmd}")
    hmd = os.path.join(out, "webhook.md")
    # the ceiling-and-peer table (wrk, pg_notifier's workloads, pg_net), or
    # the older reports' targets table
    t = find_table(hmd, "per second", "ratio") or find_table(hmd, "events/s or latency")
    if t:
        head, rows = t
        c = col(head, "per second")
        c = col(head, "events/s or latency") if c is None else c
        labels, values = [], []
        for r in rows:
            if c < len(r) and ("events/s" in r[c] or "requests/s" in r[c]) and not r[0].startswith("latency"):
                v = num(r[c])
                if v is not None:
                    labels.append(re.sub(r"\s*\(.*", "", r[0]).replace("`", ""))
                    values.append(v)
        if values:
            m = machine(hmd)
            panels.append(bars("Webhook delivery to nginx on loopback"
                               + (f"\\nmeasured on {m}" if m else ""),
                               "events/s (higher is better)", labels, values, "%.0f", rotate=True))
        else:
            skip("throughput.png (webhook panel)", f"no events/s rows in {hmd}")
    else:
        skip("throughput.png (webhook panel)", f"no throughput table in {hmd}")
    if not panels:
        return skip("throughput.png", "neither worker nor webhook throughput found")
    png = os.path.join(charts, "throughput.png")
    script = "set bmargin 10\n"
    if len(panels) > 1:
        script += "set multiplot layout 1,%d\n" % len(panels) + "".join(panels) + "unset multiplot\n"
    else:
        script += panels[0]
    render(GP, png, script, "%d,600" % (600 * len(panels) + 100))
    return png


def chart_latency(out, charts):
    md = os.path.join(out, "webhook.md")
    t = find_table(md, "p50", "p99.9", "max")
    if not t:
        return skip("webhook-latency.png", f"no percentile table in {md}")
    head, rows = t
    row = next((r for r in rows if "commit → 2xx" in r[0]), rows[0] if rows else None)
    if row is None:
        return skip("webhook-latency.png", "the percentile table is empty")
    labels, values = [], []
    for p in ("p50", "p90", "p99", "p99.9", "max"):
        c = head.index(p) if p in head else None
        v = num(row[c]) if c is not None and c < len(row) else None
        if v is not None:
            labels.append(p)
            values.append(v)
    if not values:
        return skip("webhook-latency.png", "no numbers in the commit → 2xx row")
    text = open(md, encoding="utf-8").read()
    rate = re.search(r"latency at ([\d,]+) events/s", text)
    m = machine(md)
    title = ("Webhook commit → 2xx latency" + (f" at {rate.group(1)} events/s" if rate else "")
             + (f"\\nmeasured on {m}" if m else ""))
    png = os.path.join(charts, "webhook-latency.png")
    render(GP, png, bars(title, "ms (lower is better)", labels, values, "%.2f"), "800,500")
    return png


def main():
    global GP, TERM
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    out, charts = sys.argv[1], sys.argv[2]
    GP = "gnuplot"
    try:
        terms = subprocess.run([GP, "-e", "set terminal"], capture_output=True, text=True)
    except FileNotFoundError:
        raise SystemExit("charts: gnuplot is not installed (Debian package gnuplot-nox)")
    TERM = "pngcairo" if "pngcairo" in (terms.stdout + terms.stderr) else "png"
    os.makedirs(charts, exist_ok=True)
    for f in (chart_triggers, chart_trigger_tps, chart_throughput, chart_latency):
        png = f(out, charts)
        if png:
            print(os.path.basename(png))


if __name__ == "__main__":
    main()
