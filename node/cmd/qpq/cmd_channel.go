package main

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/home"
)

const channelAbout = `Broadcast channels: a symmetric key shared out of band. Everyone who has
the share string can read and post; nodes relay channel messages without the
key, each once, and keep them a few hours for people who join late.

  qpq channel new NAME        make a channel; prints its share string alone on
                              stdout (explanations on stderr; --qr adds a QR code)
  qpq channel join SHARE      join from a share string, under the name inside it
                              or --name NAME; a channel you already joined keeps
                              its name unless you add --rename (with --name)
  qpq channel list [--json]   your channels: name and channel id

Post with qpq send --channel NAME --text TEXT; qpq recv shows channel
messages with kind "broadcast".`

func runChannel(env *cliEnv, args []string) int {
	fs := newFlags(env, "channel", "channel new NAME | join SHARE [--name NAME [--rename]] | list [--json]  [--home DIR]", channelAbout)
	homeDir := fs.String("home", "", "client home dir [$QPQ_HOME]")
	asJSON := fs.Bool("json", false, "list as one JSON object per line: name, id")
	name := fs.String("name", "", "local name for a joined channel")
	showQR := fs.Bool("qr", false, "also print the share string as a QR code (new)")
	rename := fs.Bool("rename", false, "with join --name: rename a channel you already joined")
	if len(args) == 0 || (args[0] != "new" && args[0] != "join" && args[0] != "list") {
		if code, ok := parseStatus(env, fs, fs.Parse(args)); !ok {
			return code
		}
		fmt.Fprintln(env.stderr, "qpq channel: want new, join or list")
		return exitUsage
	}
	sub := args[0]
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		code, _ := parseStatus(env, fs, err)
		return code
	}
	h, err := home.Resolve(*homeDir, env.getenv)
	if err != nil {
		fmt.Fprintf(env.stderr, "qpq channel: %v\n", err)
		return exitUsage
	}
	switch sub {
	case "new":
		if len(pos) != 1 {
			fmt.Fprintln(env.stderr, "qpq channel new: want NAME")
			return exitUsage
		}
		key := e2e.NewChannelKey()
		share, err := e2e.FormatShare(pos[0], key)
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq channel new: %v\n", err)
			return exitUsage
		}
		if err := h.JoinChannel(pos[0], key); err != nil {
			if errors.Is(err, home.ErrChannelName) && e2e.CheckChannelName(pos[0]) == nil {
				fmt.Fprintf(env.stderr, "qpq channel new: you already have a channel named %q (qpq channel list); choose another name: qpq channel new OTHER-NAME\n", pos[0])
				return exitFailure
			}
			fmt.Fprintf(env.stderr, "qpq channel new: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(env.stderr, "created channel %q; give this share string to its members (anyone holding it can read and post):\n", pos[0])
		fmt.Fprintln(env.stdout, share)
		if *showQR {
			if err := printQR(env.stdout, share); err != nil {
				fmt.Fprintf(env.stderr, "qpq channel new: %v\n", err)
				return exitFailure
			}
		}
	case "join":
		if len(pos) != 1 {
			fmt.Fprintln(env.stderr, "qpq channel join: want SHARE")
			return exitUsage
		}
		n, key, err := e2e.ParseShare(pos[0])
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq channel join: %v\n", err)
			return exitUsage
		}
		if *name != "" {
			n = *name
		} else if *rename {
			fmt.Fprintln(env.stderr, "qpq channel join: --rename needs --name NEW")
			return exitUsage
		}
		err = h.JoinChannel(n, key)
		var joined *home.JoinedError
		switch {
		case errors.As(err, &joined) && *rename:
			if err := h.RenameChannel(key, n); err != nil {
				fmt.Fprintf(env.stderr, "qpq channel join: %v\n", err)
				return exitFailure
			}
			fmt.Fprintf(env.stdout, "renamed channel %q to %q\n", joined.Name, n)
			return exitOK
		case errors.As(err, &joined) && *name == "":
			fmt.Fprintf(env.stderr, "qpq channel join: you already joined this channel as %q; nothing changed (to rename it: qpq channel join SHARE --name NEW --rename)\n", joined.Name)
			return exitOK
		case errors.As(err, &joined):
			fmt.Fprintf(env.stderr, "qpq channel join: you already joined this channel as %q; nothing changed; to rename it to %q, run again with --rename\n", joined.Name, n)
			return exitFailure
		case errors.Is(err, home.ErrChannelName) && e2e.CheckChannelName(n) == nil:
			fmt.Fprintf(env.stderr, "qpq channel join: you already have another channel named %q; join this one under another name: qpq channel join SHARE --name OTHER-NAME\n", n)
			return exitFailure
		case err != nil:
			fmt.Fprintf(env.stderr, "qpq channel join: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(env.stdout, "joined channel %q\n", n)
	case "list":
		cs, err := h.Channels()
		if err != nil {
			fmt.Fprintf(env.stderr, "qpq channel list: %v\n", err)
			return exitFailure
		}
		for _, c := range cs {
			id := c.Key.ID()
			if *asJSON {
				if code := writeJSON(env, "channel list", channelJSON{Name: c.Name, ID: hex.EncodeToString(id[:])}); code != exitOK {
					return code
				}
			} else {
				fmt.Fprintf(env.stdout, "%-20s %x\n", c.Name, id)
			}
		}
	}
	return exitOK
}
