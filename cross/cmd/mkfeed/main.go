// Command mkfeed writes a signed package feed a router adds as a custom feed: per
// architecture an opkg index (Packages, Packages.gz, Packages.sig signed with usign)
// holding that arch's .ipk, and an apk v3 index (packages.adb, signed by apk mkndx)
// holding that arch's .apk. The keys stay outside the repository; mkfeed copies only
// the public usign key into the feed.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func main() {
	ipkDir := flag.String("ipk", "build/ipk", "directory of the .ipk files")
	apkDir := flag.String("apk", "build/apk", "directory of ARCH/*.apk")
	out := flag.String("out", "build/feed", "feed directory to write")
	usignKey := flag.String("usign-key", "", "usign secret key (usign -G); its .pub beside it is copied into the feed")
	apkKey := flag.String("apk-key", "", "apk private key (PEM, e.g. openssl genrsa)")
	tools := flag.String("tools", "", "directory holding bin/usign and bin/apk")
	flag.Parse()
	if *usignKey == "" || *apkKey == "" || *tools == "" {
		fmt.Fprintln(os.Stderr, "mkfeed: -usign-key, -apk-key and -tools are required")
		os.Exit(2)
	}
	if err := run(*ipkDir, *apkDir, *out, *usignKey, *apkKey, *tools); err != nil {
		fmt.Fprintln(os.Stderr, "mkfeed:", err)
		os.Exit(1)
	}
}

func run(ipkDir, apkDir, out, usignKey, apkKey, tools string) error {
	ipks, err := filepath.Glob(filepath.Join(ipkDir, "*.ipk"))
	if err != nil {
		return err
	}
	byArch := map[string][]string{}
	controls := map[string]string{}
	for _, p := range ipks {
		ctl, err := ipkControl(p)
		if err != nil {
			return err
		}
		arch := field(ctl, "Architecture")
		if arch == "" {
			return fmt.Errorf("%s: no Architecture field", p)
		}
		byArch[arch] = append(byArch[arch], p)
		controls[p] = ctl
	}
	if len(byArch) == 0 {
		return fmt.Errorf("no .ipk in %s", ipkDir)
	}
	usign := filepath.Join(tools, "bin", "usign")
	for arch, paths := range byArch {
		sort.Strings(paths)
		dir := filepath.Join(out, arch)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		var idx strings.Builder
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			name := filepath.Base(p)
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			idx.WriteString(strings.TrimRight(controls[p], "\n") + "\n")
			fmt.Fprintf(&idx, "Filename: %s\nSize: %s\nSHA256sum: %s\n\n", name, strconv.Itoa(len(b)), hex.EncodeToString(sum[:]))
		}
		pk := filepath.Join(dir, "Packages")
		if err := os.WriteFile(pk, []byte(idx.String()), 0o644); err != nil {
			return err
		}
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		if _, err := zw.Write([]byte(idx.String())); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		if err := os.WriteFile(pk+".gz", gz.Bytes(), 0o644); err != nil {
			return err
		}
		if b, err := exec.Command(usign, "-S", "-m", pk, "-s", usignKey, "-x", pk+".sig").CombinedOutput(); err != nil {
			return fmt.Errorf("usign -S %s: %w\n%s", pk, err, b)
		}
	}
	// The public key a router installs in /etc/opkg/keys/<fingerprint>.
	pubPath := strings.TrimSuffix(usignKey, ".sec") + ".pub"
	b, err := os.ReadFile(pubPath)
	if err != nil {
		return fmt.Errorf("usign public key beside the secret key (usign -G writes both): %w", err)
	}
	fp, err := exec.Command(usign, "-F", "-p", pubPath).Output()
	if err != nil {
		return fmt.Errorf("usign -F %s: %w", pubPath, err)
	}
	sfp, err := exec.Command(usign, "-F", "-s", usignKey).Output()
	if err != nil || string(sfp) != string(fp) {
		return fmt.Errorf("usign keys %s and %s are not one pair (%v)", usignKey, pubPath, err)
	}
	if err := os.WriteFile(filepath.Join(out, "usign-"+strings.TrimSpace(string(fp))+".pub"), b, 0o644); err != nil {
		return err
	}
	if err := apkPublicKey(apkKey, filepath.Join(out, filepath.Base(apkKey)+".pub")); err != nil {
		return err
	}
	return apkIndexes(apkDir, out, apkKey, filepath.Join(tools, "bin", "apk"))
}

// apkPublicKey writes the public half of the PEM private key, the file a router puts in
// /etc/apk/keys/.
func apkPublicKey(keyPath, dst string) error {
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("apk key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return fmt.Errorf("apk key %s: not PEM", keyPath)
	}
	var pub any
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		pub = k.(interface{ Public() crypto.PublicKey }).Public()
	} else if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		pub = k.Public()
	} else if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		pub = k.Public()
	} else {
		return fmt.Errorf("apk key %s: not an RSA or EC private key", keyPath)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return fmt.Errorf("apk key %s: %w", keyPath, err)
	}
	return os.WriteFile(dst, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644)
}

// apkIndexes copies each ARCH/*.apk into the feed and indexes it with a signed packages.adb.
func apkIndexes(apkDir, out, key, apk string) error {
	dirs, err := filepath.Glob(filepath.Join(apkDir, "*"))
	if err != nil {
		return err
	}
	n := 0
	for _, d := range dirs {
		pkgs, _ := filepath.Glob(filepath.Join(d, "*.apk"))
		if len(pkgs) == 0 {
			continue
		}
		dst := filepath.Join(out, "apk", filepath.Base(d))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		args := []string{"mkndx", "--allow-untrusted", "--output", filepath.Join(dst, "packages.adb"), "--sign-key", key}
		for _, p := range pkgs {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			to := filepath.Join(dst, filepath.Base(p))
			if err := os.WriteFile(to, b, 0o644); err != nil {
				return err
			}
			args = append(args, to)
		}
		if b, err := exec.Command(apk, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("apk mkndx %s: %w\n%s", dst, err, b)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("no .apk in %s/*/", apkDir)
	}
	return nil
}

// ipkControl returns the control file of an .ipk (a gzip'd tar holding control.tar.gz).
func ipkControl(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	inner, err := member(f, "control.tar.gz")
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	ctl, err := member(bytes.NewReader(inner), "control")
	if err != nil {
		return "", fmt.Errorf("%s: control.tar.gz: %w", path, err)
	}
	return string(ctl), nil
}

// member returns the file name (with or without ./) from the gzip'd tar r.
func member(r io.Reader, name string) ([]byte, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("no %s", name)
		}
		if err != nil {
			return nil, err
		}
		if strings.TrimPrefix(h.Name, "./") == name {
			return io.ReadAll(io.LimitReader(tr, 64<<20))
		}
	}
}

func field(ctl, name string) string {
	for _, l := range strings.Split(ctl, "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok && k == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
