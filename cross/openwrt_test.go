package cross

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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

// harness sources the init script under busybox sh with procd, uci and logger replaced
// by stubs that print what they are called with, then calls start_service.
const harness = `
. "$INIT"
PROG="$FAKE_QPQ"
# The control dir off the host's /var/run; the qpq user as the package creates it.
CONTROL_DIR="$FAKE_RUN"
user_exists() { [ "$1" = qpq ]; }
chown() { echo "chown $*"; }
logger() { echo "logger $*"; }
config_load() { echo "config_load $1"; }
config_get() {
	eval "_isset=\${UCI_$3+x}"
	if [ -n "$_isset" ]; then eval "$1=\$UCI_$3"; else eval "$1=\$4"; fi
}
config_get_bool() {
	config_get "$@"
	eval "_v=\$$1"
	case "$_v" in 1|on|true|yes|enabled) eval "$1=1" ;; *) eval "$1=0" ;; esac
}
config_list_foreach() {
	eval "_list=\$UCI_$2"
	for _p in $_list; do "$3" "$_p"; done
}
procd_open_instance() { echo "procd_open_instance"; }
procd_close_instance() { echo "procd_close_instance"; }
procd_set_param() { echo "procd_set_param $*"; }
procd_append_param() { echo "procd_append_param $*"; }
procd_open_data() { echo "procd_open_data"; }
procd_close_data() { echo "procd_close_data"; }
json_add_array() { echo "json_add_array $*"; }
json_close_array() { echo "json_close_array"; }
json_add_object() { echo "json_add_object"; }
json_close_object() { echo "json_close_object"; }
json_add_string() { echo "json_add_string $*"; }
start_service
echo "rc=$?"
`

// fakeQPQ answers `config check FILE`: success, or with $FAKE_CHECK set, that text and
// status 1.
const fakeQPQ = `#!/bin/sh
if [ "$1 $2" = "config check" ]; then
	if [ -n "$FAKE_CHECK" ]; then
		printf '%s\n' "$FAKE_CHECK"
		exit 1
	fi
	exit 0
fi
echo "unexpected call: $*" >&2
exit 3
`

// startService runs start_service with the given uci option values (UCI_<option>;
// UCI_peer is a space-separated list) and returns its output lines.
func startService(t *testing.T, env map[string]string) []string {
	t.Helper()
	bb := needTool(t, "busybox")
	dir := t.TempDir()
	if _, ok := env["UCI_store"]; !ok {
		// Keep the script's default (/tmp/qpq) off this machine.
		env["UCI_store"] = filepath.Join(dir, "store", "store.db")
	}
	fake := filepath.Join(dir, "qpq")
	if err := os.WriteFile(fake, []byte(fakeQPQ), 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(initScript)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bb, "sh", "-c", harness)
	cmd.Env = append(os.Environ(), "INIT="+abs, "FAKE_QPQ="+fake, "FAKE_RUN="+filepath.Join(dir, "run"))
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("harness: %v\n%s%s", err, out, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Errorf("harness wrote to stderr:\n%s", stderr.String())
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func hasLine(lines []string, want string) bool { return slices.Contains(lines, want) }

func hasPrefix(lines []string, prefix string) bool {
	return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

func TestInitStartServicePassesUCIAsFlags(t *testing.T) {
	data := filepath.Join(t.TempDir(), "keys")
	storeFile := filepath.Join(t.TempDir(), "ram", "store.db")
	lines := startService(t, map[string]string{
		"UCI_enabled":         "1",
		"UCI_data":            data,
		"UCI_log_level":       "debug",
		"UCI_mem_limit":       "48M",
		"UCI_peer":            "192.0.2.1:7443#aaaa [2001:db8::1]:7443#bbbb",
		"UCI_store":           storeFile,
		"UCI_store_max_bytes": "8M",
		"UCI_max_ttl":         "2d",
		"UCI_max_hops":        "8",
		"UCI_domain":          "mesh-x",
	})
	// The fake binary's path varies; call it FAKE.
	for i, l := range lines {
		if strings.HasPrefix(l, "procd_set_param command ") {
			f := strings.Fields(l)
			f[2] = "FAKE"
			lines[i] = strings.Join(f, " ")
		}
	}
	wantLines := []string{
		"config_load qpq",
		"procd_open_instance",
		"procd_set_param command FAKE node --data " + data + " --listen [::]:7443 --control /var/run/qpq/qpq.sock --log-level debug --store " + storeFile,
		"procd_append_param command --store-max-bytes 8M",
		"procd_append_param command --max-ttl 2d",
		"procd_append_param command --max-hops 8",
		"procd_append_param command --mdns",
		"procd_append_param command --domain mesh-x",
		"json_add_string dest_port 5353",
		"procd_append_param command --peer 192.0.2.1:7443#aaaa",
		"procd_append_param command --peer [2001:db8::1]:7443#bbbb",
		"procd_set_param env GOMEMLIMIT=48MiB",
		"procd_set_param user qpq",
		"procd_set_param respawn",
		"procd_set_param stdout 1",
		"procd_set_param stderr 1",
		"procd_set_param file /etc/config/qpq",
		"procd_set_param term_timeout 10",
		"procd_open_data",
		"json_add_array firewall",
		"json_add_string type rule",
		"json_add_string dest_port 7443",
		"json_add_string proto udp",
		"json_add_string target ACCEPT",
		"procd_close_data",
		"procd_close_instance",
		"rc=0",
	}
	for _, want := range wantLines {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if hasPrefix(lines, "json_add_string dest_ip") {
		t.Errorf("a wildcard listen address must not restrict dest_ip:\n%s", strings.Join(lines, "\n"))
	}
	// The peers come after the command and before the instance closes.
	cmdAt := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "procd_set_param command ") })
	peerAt := slices.Index(lines, "procd_append_param command --peer 192.0.2.1:7443#aaaa")
	closeAt := slices.Index(lines, "procd_close_instance")
	if !(cmdAt >= 0 && cmdAt < peerAt && peerAt < closeAt) {
		t.Errorf("command, peers and close out of order:\n%s", strings.Join(lines, "\n"))
	}
	fi, err := os.Stat(data)
	if err != nil {
		t.Fatalf("data dir not created: %v", err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v, want 0700", fi.Mode().Perm())
	}
}

func TestInitStartServiceDefaults(t *testing.T) {
	lines := startService(t, map[string]string{"UCI_enabled": "1", "UCI_data": t.TempDir()})
	if hasPrefix(lines, "procd_set_param env") {
		t.Errorf("no mem_limit must set no GOMEMLIMIT:\n%s", strings.Join(lines, "\n"))
	}
	if !hasPrefix(lines, "procd_set_param command ") || !strings.Contains(strings.Join(lines, "\n"), "--listen [::]:7443 ") {
		t.Errorf("default listen missing:\n%s", strings.Join(lines, "\n"))
	}
	if !strings.Contains(strings.Join(lines, "\n"), "--log-level info") {
		t.Errorf("default log level missing:\n%s", strings.Join(lines, "\n"))
	}
	if hasPrefix(lines, "procd_append_param command --peer") {
		t.Errorf("no peers configured, yet:\n%s", strings.Join(lines, "\n"))
	}
}

func TestInitFirewallFollowsListen(t *testing.T) {
	tests := []struct {
		listen, port, destIP string
	}{
		{"[::]:7443", "7443", ""},
		{"0.0.0.0:9000", "9000", ""},
		{"192.168.1.1:7443", "7443", "192.168.1.1"},
		{"[fd00::1]:8443", "8443", "fd00::1"},
	}
	for _, tt := range tests {
		t.Run(tt.listen, func(t *testing.T) {
			lines := startService(t, map[string]string{"UCI_enabled": "1", "UCI_data": t.TempDir(), "UCI_listen": tt.listen})
			if !hasLine(lines, "json_add_string dest_port "+tt.port) {
				t.Errorf("want dest_port %s:\n%s", tt.port, strings.Join(lines, "\n"))
			}
			if tt.destIP == "" && hasPrefix(lines, "json_add_string dest_ip") ||
				tt.destIP != "" && !hasLine(lines, "json_add_string dest_ip "+tt.destIP) {
				t.Errorf("want dest_ip %q:\n%s", tt.destIP, strings.Join(lines, "\n"))
			}
		})
	}
}

func TestInitMemLimitToGOMEMLIMIT(t *testing.T) {
	tests := []struct{ uci, env string }{
		{"48M", "48MiB"},
		{"512K", "512KiB"},
		{"1G", "1GiB"},
		{"50000000", "50000000"},
		{"1.5G", ""},
		{"48MB", ""},
		{"M", ""},
		{"-1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.uci, func(t *testing.T) {
			lines := startService(t, map[string]string{"UCI_enabled": "1", "UCI_data": t.TempDir(), "UCI_mem_limit": tt.uci})
			if tt.env != "" {
				if !hasLine(lines, "procd_set_param env GOMEMLIMIT="+tt.env) {
					t.Errorf("want GOMEMLIMIT=%s:\n%s", tt.env, strings.Join(lines, "\n"))
				}
				return
			}
			if hasPrefix(lines, "procd_set_param env") {
				t.Errorf("a malformed mem_limit must set no GOMEMLIMIT:\n%s", strings.Join(lines, "\n"))
			}
			if !hasPrefix(lines, "logger -t qpq -p daemon.err ignoring mem_limit") {
				t.Errorf("a malformed mem_limit must be logged:\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

func TestInitDisabledStartsNothing(t *testing.T) {
	for _, v := range []string{"0", "off", ""} {
		lines := startService(t, map[string]string{"UCI_enabled": v, "UCI_data": t.TempDir()})
		if hasLine(lines, "procd_open_instance") {
			t.Errorf("enabled=%q opened an instance:\n%s", v, strings.Join(lines, "\n"))
		}
		if !hasLine(lines, "rc=0") || !hasPrefix(lines, "logger -t qpq -p daemon.notice not starting: disabled") {
			t.Errorf("enabled=%q: want a notice and status 0:\n%s", v, strings.Join(lines, "\n"))
		}
	}
}

func TestInitRefusesBadConfig(t *testing.T) {
	problems := "/etc/config/qpq:9: main.listen: port 99999 is out of range\n/etc/config/qpq:12: main.bogus: unknown option"
	lines := startService(t, map[string]string{"UCI_enabled": "1", "UCI_data": t.TempDir(), "FAKE_CHECK": problems})
	if hasLine(lines, "procd_open_instance") {
		t.Errorf("a failed config check opened an instance:\n%s", strings.Join(lines, "\n"))
	}
	for _, want := range []string{
		"logger -t qpq -p daemon.err /etc/config/qpq:9: main.listen: port 99999 is out of range",
		"logger -t qpq -p daemon.err /etc/config/qpq:12: main.bogus: unknown option",
		"rc=1",
	} {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	if !hasPrefix(lines, "logger -t qpq -p daemon.err not starting: /etc/config/qpq has problems") {
		t.Errorf("missing the not-starting line:\n%s", strings.Join(lines, "\n"))
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
		`(?m)^\s*procd_add_reload_trigger qpq$`, `(?m)^\s*"\$PROG" config check|config check "\$CONFIG_FILE"`} {
		if !regexp.MustCompile(re).MatchString(s) {
			t.Errorf("init script lacks %s", re)
		}
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
	want := map[string]string{"enabled": "1", "listen": "[::]:7443", "data": "/etc/qpq", "log_level": "info"}
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
