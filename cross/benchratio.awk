# Reads `go test -bench` output; prints each benchmark group's variants as
# a ratio to its "bare" quic-go baseline from the same run.
/^Benchmark/ {
	split($1, part, "/")
	group = part[1]; sub(/^Benchmark/, "", group)
	variant = part[2]; sub(/-[0-9]+$/, "", variant)
	for (i = 2; i <= NF; i++) if ($(i) == "ns/op") ns = $(i - 1)
	val[group, variant] = ns
	if (!(group in seen)) { seen[group] = 1; order[++n] = group }
	vars[group] = vars[group] " " variant
}
END {
	printf "%-10s %-6s %14s %10s\n", "bench", "what", "time/op", "x bare"
	for (k = 1; k <= n; k++) {
		g = order[k]
		base = val[g, "bare"]
		m = split(vars[g], vs, " ")
		for (j = 1; j <= m; j++) {
			v = vs[j]
			t = val[g, v]
			unit = "us"; shown = t / 1000
			if (shown >= 1000) { unit = "ms"; shown = shown / 1000 }
			ratio = (base > 0) ? sprintf("%.2f", t / base) : "n/a"
			printf "%-10s %-6s %11.2f %s %10s\n", g, v, shown, unit, ratio
		}
	}
}
