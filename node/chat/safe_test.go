package chat

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

const forged = "hi\x1b[2J\nalice: fake"

func runWith(t *testing.T, json bool, in string) string {
	b := &fakeBackend{ev: make(chan Event, 1)}
	b.ev <- Event{Kind: EventMessage, Message: &Message{FromCode: "k3x9", Text: forged}}
	var out bytes.Buffer
	in += strings.Repeat("x", MaxLine+10) + "\n/quit\n"
	if err := Run(context.Background(), b, Config{In: strings.NewReader(in), Out: &out, JSON: json}); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestForgedTextAndJSON(t *testing.T) {
	txt := runWith(t, false, "")
	if strings.Contains(txt, "\x1b") || strings.Contains(txt, "\nalice: fake") || !strings.Contains(txt, "(not a contact)") {
		t.Errorf("text mode not neutralised or unmarked:\n%q", txt)
	}
	if !strings.Contains(txt, "line longer than") {
		t.Errorf("overlong line not refused:\n%q", txt)
	}
	js := runWith(t, true, "{\"id\":\"7\",\"cmd\":\"/dm bob hello\"}\n{bad\n")
	for _, want := range []string{`"Text":"hi\u001b[2J\nalice: fake"`, `"id":"7","ok":true`, `bad JSON command`, `line longer than`} {
		if !strings.Contains(js, want) {
			t.Errorf("json lacks %q:\n%s", want, js)
		}
	}
}
