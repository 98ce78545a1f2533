package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseSize parses a byte count with an optional K, M or G suffix (powers
// of 1024), e.g. "64M". Exactly this form, so the init script's own
// conversion (mem_limit to GOMEMLIMIT) accepts whatever passes here.
func ParseSize(s string) (int64, error) {
	t := s
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult != 1 {
			t = t[:n-1]
		}
	}
	if t == "" || strings.Trim(t, "0123456789") != "" {
		return 0, fmt.Errorf("want a size like 512K, 64M or 1G")
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > (1<<62)/mult {
		return 0, errors.New("size too large")
	}
	return n * mult, nil
}

// ParseDuration accepts Go durations plus a "d" suffix for days ("7d",
// "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	days := int64(0)
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 32)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("want a duration like 90s, 6h or 7d")
		}
		days, s = n, s[i+1:]
		if s == "" {
			s = "0s"
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration like 90s, 6h or 7d")
	}
	total := time.Duration(days)*24*time.Hour + d
	if total < d {
		return 0, errors.New("duration too long")
	}
	return total, nil
}

// Boolean spellings ParseBool accepts, as uci's config_get_bool does;
// its error lists them, so the message and the accepted set cannot drift.
var (
	trueWords  = []string{"1", "yes", "on", "true", "enabled"}
	falseWords = []string{"0", "no", "off", "false", "disabled"}
)

// ParseBool accepts uci's spellings of true and false, in any case.
func ParseBool(s string) (bool, error) {
	l := strings.ToLower(s)
	for _, w := range trueWords {
		if l == w {
			return true, nil
		}
	}
	for _, w := range falseWords {
		if l == w {
			return false, nil
		}
	}
	return false, fmt.Errorf("want a boolean: %s for true, %s for false",
		strings.Join(trueWords, "/"), strings.Join(falseWords, "/"))
}
