package uci

import (
	"fmt"
	"strings"
	"testing"
)

// exportText writes f the way `uci export` does (without the package line),
// so a file in that form reads back byte for byte. Types are written bare
// when they can be, as uci does.
func exportText(f *File) string {
	var b strings.Builder
	for _, s := range f.Sections {
		typ := s.Type
		if !validPackage(typ) {
			typ = quoteUCI(typ)
		}
		fmt.Fprintf(&b, "\nconfig %s", typ)
		if s.Name != "" {
			fmt.Fprintf(&b, " %s", quoteUCI(s.Name))
		}
		b.WriteString("\n")
		for _, o := range s.Options {
			kw := "option"
			if o.List {
				kw = "list"
			}
			fmt.Fprintf(&b, "\t%s %s %s\n", kw, o.Name, quoteUCI(o.Value))
		}
	}
	b.WriteString("\n")
	return b.String()
}

// quoteUCI single-quotes v as uci does: a quote inside ends the quoted part,
// is written as \' and starts a new quoted part.
func quoteUCI(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

// realistic is an /etc/config/qpq as `uci export qpq` would print it after
// `uci set`/`uci add_list` edits, with the kinds of sections other OpenWrt
// packages use beside it.
const realistic = `
config qpq 'main'
	option enabled '1'
	option data '/etc/qpq'
	option listen '[::]:7443'
	option control '/var/run/qpq.sock'
	option log_level 'info'
	option mem_limit '48M'
	list peer '192.0.2.10:7443#3f2a9c0d11e4b7a8'
	list peer '[2001:db8::1]:7443'
	option motd 'it'\''s "quoted"; # not a comment'

config peer 'uplink'
	option addr '198.51.100.7:7443'
	option fingerprint 'ab12cd34ef56'

config channel
	option name 'general'
	option retention '7d'

config channel
	option name 'ops'
	list member 'alice'
	list member 'bob'

config wifi-iface 'default_radio0'
	option device 'radio0'
	option network 'lan'
	option mode 'mesh'
	option mesh_id 'qpq-mesh'
	option encryption 'sae'
	option key 'correct horse battery staple'

`

func TestRealisticRoundTrip(t *testing.T) {
	f, probs := Parse(strings.NewReader(realistic))
	if len(probs) != 0 {
		t.Fatalf("problems: %q", formatAll(probs))
	}
	main := f.Section("qpq", "main")
	if main == nil || main.Line != 2 {
		t.Fatalf("main section: %+v", main)
	}
	if o, ok := main.Get("listen"); !ok || o.Value != "[::]:7443" || o.Line != 5 {
		t.Errorf("listen = %+v, %v", o, ok)
	}
	if got := main.List("peer"); len(got) != 2 || got[1] != "[2001:db8::1]:7443" {
		t.Errorf("peers = %q", got)
	}
	if o, _ := main.Get("motd"); o.Value != `it's "quoted"; # not a comment` {
		t.Errorf("motd = %q", o.Value)
	}
	ops := f.Sections[3]
	if f.SectionRef(ops) != "@channel[1]" || ops.Line != 21 {
		t.Errorf("ops channel is %s at line %d", f.SectionRef(ops), ops.Line)
	}
	if got := ops.List("member"); strings.Join(got, ",") != "alice,bob" {
		t.Errorf("members = %q", got)
	}
	if w := f.Section("wifi-iface", "default_radio0"); w == nil || len(w.Options) != 6 {
		t.Errorf("wifi-iface: %+v", w)
	}

	if out := exportText(f); out != realistic {
		t.Errorf("export differs from the input:\n%s", out)
	}

	// The same settings written by hand, in every other accepted form,
	// read back as the same sections and options.
	const byHand = `package qpq
# qpq node settings
config qpq main   # the one section qpq reads
	option enabled 1
	option data "/etc/qpq"
	option listen [::]:7443 ; option control '/var/run/qpq.sock'
	option log_level "info"
	option mem_limit '48'M
	list peer 192.0.2.10:7443#3f2a9c0d11e4b7a8
	list peer "[2001:db8::1]:7443"
	option motd "it's \"quoted\"; # not a comment"
config peer uplink
	option addr 198.51.100.7:7443
	option fingerprint ab12cd34ef56
config channel
	option name general; option retention 7d
config channel ''
	option name ops
	list member alice
	list member \
bob
config 'wifi-iface' "default_radio0"
	option device radio0
	option network lan
	option mode mesh
	option mesh_id qpq-mesh
	option encryption sae
	option key correct\ horse\ "battery staple"
`
	g, probs := Parse(strings.NewReader(byHand))
	if len(probs) != 0 {
		t.Fatalf("problems: %q", formatAll(probs))
	}
	// "#" ends a bare word, as in libuci, so the peer lost its fingerprint.
	if got := g.Section("qpq", "main").List("peer")[0]; got != "192.0.2.10:7443" {
		t.Errorf("bare peer = %q", got)
	}
	g.Section("qpq", "main").Options[6].Value = "192.0.2.10:7443#3f2a9c0d11e4b7a8"
	if out := exportText(g); out != realistic {
		t.Errorf("hand-written form reads differently:\n%s", out)
	}
}
