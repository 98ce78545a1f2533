# Reads `go test -bench` output; prints each benchmark with its time per
# operation, its other metrics, and, where the group has a "bare" variant
# (the quic-go baseline measured in the same run), the ratio to it; a
# group without one is compared with its "direct" variant.
# Where both have a us/hop figure the ratio is of those (HopLatency's
# ns/op is two trips, not a hop). A line without a result (the name alone, as -v prints it before the run)
# is skipped; a variant printed twice is listed once.
/^Benchmark/ && NF >= 4 {
	name = $1; sub(/^Benchmark/, "", name); sub(/-[0-9]+$/, "", name)
	n = split(name, part, "/")
	group = part[1]; variant = (n > 1) ? part[2] : "-"
	extra = ""; ns = ""
	for (i = 3; i < NF; i += 2) {
		if ($(i + 1) == "ns/op") ns = $(i)
		else if ($(i + 1) != "B/op" && $(i + 1) != "allocs/op") extra = extra sprintf("  %s %s", $(i), $(i + 1))
		if ($(i + 1) == "us/hop") hop[group, variant] = $(i)
	}
	key = group SUBSEP variant
	val[key] = ns; ext[key] = extra
	if (!(group in seen)) { seen[group] = 1; order[++groups] = group }
	if (!(key in listed)) { listed[key] = 1; vars[group] = vars[group] " " variant }
}
END {
	printf "%-26s %-12s %12s %8s  %s\n", "benchmark", "what", "time/op", "x bare", "metrics"
	for (k = 1; k <= groups; k++) {
		g = order[k]
		anchor = ((g SUBSEP "bare") in listed) ? "bare" : "direct"
		base = val[g, anchor]
		m = split(vars[g], vs, " ")
		for (j = 1; j <= m; j++) {
			v = vs[j]; t = val[g, v]
			ratio = (base > 0 && t != "") ? sprintf("%.2f", t / base) : ""
			if (hop[g, anchor] > 0 && hop[g, v] != "") ratio = sprintf("%.2f", hop[g, v] / hop[g, anchor])
			if (t == "") { printf "%-26s %-12s %12s %8s %s\n", g, v, "-", ratio, ext[g, v]; continue }
			unit = "us"; shown = t / 1000
			if (shown >= 1000) { unit = "ms"; shown = shown / 1000 }
			if (shown >= 10000) { unit = "s"; shown = shown / 1000 }
			printf "%-26s %-12s %9.2f %-2s %8s %s\n", g, v, shown, unit, ratio, ext[g, v]
		}
	}
}
