package home

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"

	"github.com/quicproquo/qpq/node/e2e"
)

// ChannelsFile holds the channels the user joined, with their keys (mode
// 0600: the keys are the channels' secrets).
const ChannelsFile = "channels.json"

// Channel is a joined broadcast channel under its local name.
type Channel struct {
	Name string         `json:"name"`
	Key  e2e.ChannelKey `json:"key"`
}

// Channels returns the joined channels, sorted by name (never nil).
func (h Home) Channels() ([]Channel, error) {
	b, err := h.read(ChannelsFile)
	if errors.Is(err, os.ErrNotExist) {
		return []Channel{}, nil
	}
	if err != nil {
		return nil, err
	}
	var cs []Channel
	if err := json.Unmarshal(b, &cs); err != nil {
		return nil, fmt.Errorf("%s: %w", h.Path(ChannelsFile), err)
	}
	if cs == nil {
		cs = []Channel{}
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs, nil
}

// ErrChannelName is returned when a name is taken or invalid.
var ErrChannelName = errors.New("bad channel name")

// JoinedError is returned by JoinChannel when the channel's key is already
// joined under another name, so that a join never renames silently.
type JoinedError struct {
	Name string // the name the channel has now
}

func (e *JoinedError) Error() string {
	return fmt.Sprintf("channel already joined as %q", e.Name)
}

// JoinChannel stores a channel under name. Joining the same key again
// under the same name is fine; a name used by another key returns
// ErrChannelName, and a key already joined under another name returns
// *JoinedError (RenameChannel renames it).
func (h Home) JoinChannel(name string, key e2e.ChannelKey) error {
	return h.storeChannel(name, key, false)
}

// RenameChannel gives the joined channel with key the new name; it returns
// an error when the key is not joined or the name belongs to another key.
func (h Home) RenameChannel(key e2e.ChannelKey, name string) error {
	return h.storeChannel(name, key, true)
}

func (h Home) storeChannel(name string, key e2e.ChannelKey, rename bool) error {
	if err := e2e.CheckChannelName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrChannelName, err)
	}
	cs, err := h.Channels()
	if err != nil {
		return err
	}
	out := make([]Channel, 0, len(cs)+1)
	joined := false
	for _, c := range cs {
		if c.Name == name {
			if c.Key.Equal(key) {
				return nil
			}
			return fmt.Errorf("%w %q: already names another channel", ErrChannelName, name)
		}
		if c.Key.Equal(key) {
			if !rename {
				return &JoinedError{Name: c.Name}
			}
			joined = true
			continue // renamed below
		}
		out = append(out, c)
	}
	if rename && !joined {
		return errors.New("rename channel: not joined")
	}
	out = append(out, Channel{Name: name, Key: key})
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", h.Path(ChannelsFile), err)
	}
	return h.write(ChannelsFile, append(b, '\n'))
}

// ChannelByName returns the joined channel called name.
func (h Home) ChannelByName(name string) (Channel, error) {
	cs, err := h.Channels()
	if err != nil {
		return Channel{}, err
	}
	for _, c := range cs {
		if c.Name == name {
			return c, nil
		}
	}
	return Channel{}, fmt.Errorf("no channel named %q (qpq channel list shows yours)", name)
}
