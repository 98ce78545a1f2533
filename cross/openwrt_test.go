package cross

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/cross/ipk"
)

const (
	initScript = "../openwrt/files/qpq.init"
	configFile = "../openwrt/files/qpq.config"
	keepFile   = "../openwrt/files/qpq.keep"
	feedMake   = "../openwrt/Makefile"
)

// needTool returns the path of a command; without it the test is skipped, or fails
// under CI=true.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI=true: a missing tool is a failure)", name)
		}
		t.Skipf("%s not found: skipping", name)
	}
	return p
}

func TestInitScriptBusyboxSyntax(t *testing.T) {
	bb := needTool(t, "busybox")
	out, err := exec.Command(bb, "sh", "-n", initScript).CombinedOutput()
	if err != nil {
		t.Fatalf("busybox sh -n %s: %v\n%s", initScript, err, out)
	}
}

func TestScriptsPassShellcheck(t *testing.T) {
	sc := needTool(t, "shellcheck")
	for _, f := range []string{initScript, "build.sh", "smoke.sh"} {
		out, err := exec.Command(sc, f).CombinedOutput()
		if err != nil {
			t.Errorf("shellcheck %s: %v\n%s", f, err, out)
		}
	}
}

func TestInitScriptHeader(t *testing.T) {
	b, err := os.ReadFile(initScript)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.HasPrefix(s, "#!/bin/sh /etc/rc.common\n") {
		t.Error("init script must start with #!/bin/sh /etc/rc.common")
	}
	for _, re := range []string{`(?m)^USE_PROCD=1$`, `(?m)^START=\d+$`, `(?m)^STOP=\d+$`,
		`(?m)^\s*procd_add_reload_trigger qpq$`, `(?m)^\s*procd_add_reload_interface_trigger "\$net"$`,
		`(?m)^\s*eval "\$check"$`, `"\$PROG" config check --shell "\$CONFIG_FILE"`,
		`(?m)^\s*procd_set_param command "\$PROG" node --uci "\$CONFIG_FILE"$`} {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("init script lacks %s", re)
		}
	}
	// One reading of /etc/config/qpq: the node's (qpq config check --shell, qpq node
	// --uci). config_get and its kin read it differently (booleans, option vs list).
	if m := regexp.MustCompile(`(?m)^[^#]*\b(config_load qpq|config_get(_bool)? \w+ main |config_list_foreach main )`).FindString(s); m != "" {
		t.Errorf("init script reads uci itself: %q", m)
	}
	fi, err := os.Stat(initScript)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o111 == 0 {
		t.Errorf("init script mode %v is not executable", fi.Mode().Perm())
	}
}

// uciOption is one option or list line of the shipped config.
type uciOption struct {
	kind, name, value string
	commented         bool // a # comment line sits right above it (or above its block)
}

func TestShippedConfig(t *testing.T) {
	f, err := os.Open(configFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lineRE := regexp.MustCompile(`^\s*(option|list)\s+(\w+)\s+'([^']*)'\s*$`)
	var (
		sections []string
		opts     []uciOption
		prevKind string // "comment", "option", "blank", "config"
		example  bool
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		trim := strings.TrimSpace(line)
		switch {
		case trim == "":
			prevKind = "blank"
		case strings.HasPrefix(trim, "#"):
			if strings.Contains(trim, "list peer '") {
				example = true
			}
			prevKind = "comment"
		case strings.HasPrefix(trim, "config "):
			sections = append(sections, trim)
			prevKind = "config"
		default:
			m := lineRE.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("%s: line %q is not an option or list line", configFile, line)
			}
			opts = append(opts, uciOption{kind: m[1], name: m[2], value: m[3], commented: prevKind == "comment"})
			prevKind = "option"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sections, []string{"config qpq 'main'"}) {
		t.Errorf("sections %q, want one: config qpq 'main'", sections)
	}
	want := map[string]string{"enabled": "0", "listen": "[::]:7443", "data": "/etc/qpq", "log_level": "info"}
	got := map[string]string{}
	for _, o := range opts {
		got[o.name] = o.value
		if !o.commented {
			t.Errorf("%s %s has no comment explaining it", o.kind, o.name)
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("option %s = %q, want %q", k, got[k], v)
		}
	}
	if m, ok := got["mem_limit"]; ok && !regexp.MustCompile(`^[0-9]+[KMG]?$`).MatchString(m) {
		t.Errorf("mem_limit %q is not a size", m)
	}
	if !example {
		t.Error("no commented list peer '...' example")
	}
}

func TestKeepFile(t *testing.T) {
	b, err := os.ReadFile(keepFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(b)); !slices.Equal(got, []string{"/etc/qpq/"}) {
		t.Errorf("keep file lists %q, want /etc/qpq/", got)
	}
}

// makeVar returns the value of VAR:=value in a Makefile, or "".
func makeVar(mk, name string) string {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `:=(.*)$`).FindStringSubmatch(mk)
	if m == nil {
		return ""
	}
	return strings.TrimSpace(m[1])
}

// makeDefine returns the body of define NAME ... endef.
func makeDefine(mk, name string) string {
	m := regexp.MustCompile(`(?ms)^define ` + regexp.QuoteMeta(name) + `\n(.*?)^endef`).FindStringSubmatch(mk)
	if m == nil {
		return ""
	}
	return m[1]
}

// TestFeedMakefileMatchesIpk checks the parts the SDK recipe and the SDK-free .ipk share.
func TestFeedMakefileMatchesIpk(t *testing.T) {
	b, err := os.ReadFile(feedMake)
	if err != nil {
		t.Fatal(err)
	}
	mk := string(b)
	build, err := os.ReadFile("build.sh")
	if err != nil {
		t.Fatal(err)
	}

	for name, want := range map[string]string{
		"PKG_NAME":         "qpq",
		"GO_PKG":           "github.com/quicproquo/qpq",
		"GO_PKG_BUILD_PKG": "github.com/quicproquo/qpq/node/cmd/qpq",
		"PKG_BUILD_FLAGS":  "no-mips16",
		"PKG_SOURCE_URL":   "https://github.com/quicproquo/qpq.git",
	} {
		if got := makeVar(mk, name); got != want {
			t.Errorf("%s:=%q, want %q", name, got, want)
		}
	}
	if got := makeVar(mk, "PKG_BUILD_DEPENDS"); !regexp.MustCompile(`^golang[0-9.]*/host$`).MatchString(got) {
		t.Errorf("PKG_BUILD_DEPENDS:=%q, want golang/host", got)
	}
	// The version variable -X sets is the one build.sh stamps.
	x := makeVar(mk, "GO_PKG_LDFLAGS_X")
	sym, _, _ := strings.Cut(x, "=")
	if sym == "" || !strings.Contains(string(build), "-X "+sym+"=") {
		t.Errorf("GO_PKG_LDFLAGS_X:=%q sets %q, which build.sh does not stamp", x, sym)
	}
	for _, re := range []string{
		`(?m)^include \$\(INCLUDE_DIR\)/package\.mk$`,
		`(?m)^include .*/lang/golang/golang-package\.mk$`,
		`(?m)^\$\(eval \$\(call GoBinPackage,qpq\)\)$`,
		`(?m)^\$\(eval \$\(call BuildPackage,qpq\)\)$`,
		`DEPENDS:=\$\(GO_ARCH_DEPENDS\)`,
	} {
		if !regexp.MustCompile(re).MatchString(mk) {
			t.Errorf("Makefile lacks %s", re)
		}
	}

	if got := strings.Fields(makeDefine(mk, "Package/qpq/conffiles")); !slices.Equal(got, []string{ipk.QPQConfigPath}) {
		t.Errorf("conffiles %q, want [%s]", got, ipk.QPQConfigPath)
	}

	// Install lines: the same files, at the same paths, with the macro giving the mode
	// cross/ipk uses (INSTALL_BIN 0755, INSTALL_CONF 0600, INSTALL_DATA 0644).
	install := makeDefine(mk, "Package/qpq/install")
	if !strings.Contains(install, "$(call GoPackage/Package/Install/Bin,$(1))") {
		t.Error("install does not put the Go binary in /usr/bin (GoPackage/Package/Install/Bin)")
	}
	for _, want := range []string{
		"$(INSTALL_BIN) ./files/qpq.init $(1)" + ipk.QPQInitPath,
		"$(INSTALL_CONF) ./files/qpq.config $(1)" + ipk.QPQConfigPath,
		"$(INSTALL_DATA) ./files/qpq.keep $(1)" + ipk.QPQKeepPath,
	} {
		if !strings.Contains(install, want) {
			t.Errorf("install lacks %q", want)
		}
	}
	if ipk.QPQInitMode != 0o755 || ipk.QPQConfigMode != 0o600 || ipk.QPQKeepMode != 0o644 || ipk.QPQBinMode != 0o755 {
		t.Error("cross/ipk modes no longer match INSTALL_BIN/INSTALL_CONF/INSTALL_DATA")
	}

	desc := strings.Join(strings.Fields(makeDefine(mk, "Package/qpq/description")), " ")
	if want := strings.Join(strings.Fields(ipk.QPQDescription), " "); desc != want {
		t.Errorf("Makefile description\n %q\ndiffers from cross/ipk's\n %q", desc, want)
	}
}
