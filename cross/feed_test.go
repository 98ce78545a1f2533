package cross

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The feed make feed writes, added to a router as a volunteer would (README, "Add the
// qpq feed") and installed from with signature checking on: opkg's check_signature with
// usign, apk's signed packages.adb without --allow-untrusted.

// feedKeys are throwaway keys: a usign pair and an apk RSA key with its public PEM.
type feedKeys struct {
	usignSec, usignPub, apkKey, apkPub string
}

func newFeedKeys(t *testing.T, tools string) feedKeys {
	t.Helper()
	d := t.TempDir()
	k := feedKeys{usignSec: filepath.Join(d, "qpq.sec"), usignPub: filepath.Join(d, "qpq.pub"),
		apkKey: filepath.Join(d, "qpq-apk.rsa"), apkPub: filepath.Join(d, "qpq-apk.rsa.pub")}
	if out, err := exec.Command(filepath.Join(tools, "bin", "usign"), "-G", "-s", k.usignSec, "-p", k.usignPub, "-c", "qpq feed").CombinedOutput(); err != nil {
		t.Fatalf("usign -G: %v\n%s", err, out)
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, d, filepath.Base(k.apkKey), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), 0o600)
	writeFile(t, d, filepath.Base(k.apkPub), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})), 0o644)
	return k
}

// makeFeed runs mkfeed on build/ipk and build/apk into a temporary directory.
func makeFeed(t *testing.T, tools string, k feedKeys) string {
	t.Helper()
	builtIPKs(t)
	builtAPKs(t)
	out := filepath.Join(t.TempDir(), "feed")
	ipks, _ := filepath.Abs(ipkDir)
	apks, _ := filepath.Abs(apkDir)
	cmd := exec.Command("go", "run", "./cross/cmd/mkfeed", "-ipk", ipks, "-apk", apks, "-out", out,
		"-usign-key", k.usignSec, "-apk-key", k.apkKey, "-tools", tools)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfeed: %v\n%s", err, b)
	}
	return out
}

// usignFingerprint is the name a router gives the key file in /etc/opkg/keys/.
func usignFingerprint(t *testing.T, tools, pub string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(tools, "bin", "usign"), "-F", "-p", pub).Output()
	if err != nil {
		t.Fatalf("usign -F: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// addOpkgFeed sets up root r as a volunteer's router: check_signature on, the feed line,
// the key in /etc/opkg/keys/<fingerprint>, and opkg-key as OpenWrt's, calling usign.
func addOpkgFeed(t *testing.T, r *opkgRoot, tools, feed, arch, pub string) {
	t.Helper()
	// Packages.sig signs Packages, as OpenWrt's feeds do. This opkg-lede keeps a src/gz
	// list compressed and verifies those bytes, so the test names the feed with src (the
	// plain Packages); the signature is the same one a src/gz router checks.
	// opkg runs verify_program (default /usr/sbin/opkg-key) as "verify SIG FILE" on the
	// host, not in the offline root: point it at the root's copy.
	conf := readFile(t, r.path("etc/opkg.conf")) + "option check_signature 1\noption verify_program " + r.path("usr/sbin/opkg-key") + "\nsrc qpq file://" + filepath.Join(feed, arch) + "\n"
	writeFile(t, r.dir, "etc/opkg.conf", conf, 0o644)
	copyFile(t, pub, r.path("etc/opkg/keys/"+usignFingerprint(t, tools, pub)), 0o644)
	writeFile(t, r.dir, "usr/sbin/opkg-key", "#!/bin/sh\n[ \"$1\" = verify ] || exit 1\nexec "+filepath.Join(tools, "bin", "usign")+
		" -V -q -P "+r.path("etc/opkg/keys")+" -x \"$2\" -m \"$3\"\n", 0o755)
}

func TestFeedOpkg(t *testing.T) {
	tools := owTools(t)
	k := newFeedKeys(t, tools)
	feed := makeFeed(t, tools, k)
	v, _ := builtIPKs(t)
	for _, arch := range []string{"x86_64", "mips_24kc"} {
		t.Run(arch, func(t *testing.T) {
			r := newOpkgRoot(t, tools, arch)
			// The public key mkfeed put in the feed, as the README has the volunteer fetch it.
			pub := filepath.Join(feed, "usign-"+usignFingerprint(t, tools, k.usignPub)+".pub")
			if readFile(t, pub) != readFile(t, k.usignPub) {
				t.Errorf("feed's %s differs from the maintainer's public key", filepath.Base(pub))
			}
			addOpkgFeed(t, r, tools, feed, arch, pub)
			out := r.mustRun(t, "update")
			if !strings.Contains(out, "Signature check passed") {
				t.Errorf("opkg update did not check the signature:\n%s", out)
			}
			r.mustRun(t, "install", "qpq")
			r.checkInstalled(t, arch, v)
		})
	}
	t.Run("tampered", func(t *testing.T) {
		tampered := filepath.Join(t.TempDir(), "feed")
		copyTree(t, feed, tampered)
		p := filepath.Join(tampered, "x86_64", "Packages")
		writeFile(t, filepath.Dir(p), "Packages", strings.Replace(readFile(t, p), "Section: net", "Section: admin", 1), 0o644)
		gz := exec.Command("sh", "-c", "gzip -9nc Packages > Packages.gz")
		gz.Dir = filepath.Dir(p)
		if out, err := gz.CombinedOutput(); err != nil {
			t.Fatalf("gzip: %v\n%s", err, out)
		}
		r := newOpkgRoot(t, tools, "x86_64")
		addOpkgFeed(t, r, tools, tampered, "x86_64", k.usignPub)
		out, _ := r.run(t, "update")
		if !strings.Contains(out, "Signature check failed") {
			t.Errorf("opkg update accepted a tampered Packages:\n%s", out)
		}
		if out, err := r.run(t, "install", "qpq"); err == nil || exists(r.path("usr/bin/qpq")) {
			t.Errorf("opkg installed qpq from a tampered feed:\n%s", out)
		}
	})
	t.Run("wrong_key", func(t *testing.T) {
		other := newFeedKeys(t, tools)
		r := newOpkgRoot(t, tools, "x86_64")
		addOpkgFeed(t, r, tools, feed, "x86_64", other.usignPub)
		out, _ := r.run(t, "update")
		if !strings.Contains(out, "Signature check failed") {
			t.Errorf("opkg update accepted a feed signed by another key:\n%s", out)
		}
	})
}

// trustedApk runs apk on r as a router does: signatures checked, no --allow-untrusted.
func trustedApk(t *testing.T, r *apkRoot, args ...string) (string, error) {
	t.Helper()
	full := append([]string{"--root", r.dir, "--no-cache", "--force-no-chroot", "--preserve-env"}, args...)
	cmd := exec.Command(r.apk, full...)
	cmd.Env = append(os.Environ(), "IPKG_INSTROOT="+r.dir, "TMPDIR="+filepath.Join(r.dir, "tmp"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestFeedApk(t *testing.T) {
	tools := owTools(t)
	k := newFeedKeys(t, tools)
	feed := makeFeed(t, tools, k)
	v, byArch := builtAPKs(t)
	for _, arch := range []string{"x86_64", "mips_24kc"} {
		t.Run(arch, func(t *testing.T) {
			r := newApkRoot(t, tools, arch)
			// The public key mkfeed put in the feed, as the README has the volunteer fetch it.
			if got, want := readFile(t, filepath.Join(feed, "qpq-apk.rsa.pub")), readFile(t, k.apkPub); got != want {
				t.Errorf("feed's apk public key:\n%s\nwant:\n%s", got, want)
			}
			copyFile(t, filepath.Join(feed, "qpq-apk.rsa.pub"), r.path("etc/apk/keys/qpq-apk.rsa.pub"), 0o644)
			writeFile(t, r.dir, "etc/apk/repositories.d/customfeeds.list", filepath.Join(feed, "apk", arch, "packages.adb")+"\n", 0o644)
			if out, err := trustedApk(t, r, "update"); err != nil {
				t.Fatalf("apk update: %v\n%s", err, out)
			}
			if out, err := trustedApk(t, r, "add", "qpq"); err != nil {
				t.Fatalf("apk add qpq: %v\n%s", err, out)
			}
			r.checkInstalled(t, arch, v)
		})
	}
	t.Run("untrusted", func(t *testing.T) {
		// Without the feed's key the index is refused, and so is a bare unsigned package.
		r := newApkRoot(t, tools, "x86_64")
		writeFile(t, r.dir, "etc/apk/repositories.d/customfeeds.list", filepath.Join(feed, "apk", "x86_64", "packages.adb")+"\n", 0o644)
		if out, err := trustedApk(t, r, "add", "qpq"); err == nil || exists(r.path("usr/bin/qpq")) || !strings.Contains(out, "UNTRUSTED") {
			t.Errorf("apk installed qpq from a feed whose key it lacks, or refused it for another reason:\n%s", out)
		}
		r2 := newApkRoot(t, tools, "x86_64")
		copyFile(t, k.apkPub, r2.path("etc/apk/keys/qpq-apk.rsa.pub"), 0o644)
		if out, err := trustedApk(t, r2, "add", byArch["x86_64"]); err == nil || exists(r2.path("usr/bin/qpq")) {
			t.Errorf("apk installed a package not in a signed index:\n%s", out)
		}
	})
}
