package uci

import "slices"

// Value is an option as libuci resolves a section: the final state after
// every `option` and `list` statement for that name, as `uci show` prints
// it.
type Value struct {
	Name string
	// List says uci holds a list (some `list` statement made it one), else
	// a single string.
	List bool
	// Values holds the one string of an option, or each element of a list.
	Values []string
	// Lines holds the line of the statement that set each element of
	// Values.
	Lines []int
}

// Line is the line of the last statement that set v.
func (v Value) Line() int { return v.Lines[len(v.Lines)-1] }

// Values returns the section's options as libuci resolves them, in the
// order uci keeps them: where each name first appeared. An `option`
// replaces whatever the name held (in its place), a `list` appends (an
// `option` followed by a `list` is a list of both), and an `option` with an
// empty value changes nothing (it neither sets nor deletes), while a
// `list` with an empty value adds an empty element, as libuci does.
func (s *Section) Values() []Value { return slices.Clone(s.values) }

// Value returns the resolved value of name, and whether it is set.
func (s *Section) Value(name string) (Value, bool) {
	if i := s.find(name); i >= 0 {
		return s.values[i], true
	}
	return Value{}, false
}

func (s *Section) find(name string) int {
	if i, ok := s.index[name]; ok {
		return i
	}
	return -1
}

// set is uci_set for an option, as the parser calls it.
func (s *Section) set(name, value string, line int) {
	if value == "" {
		return
	}
	v := Value{Name: name, Values: []string{value}, Lines: []int{line}}
	if i := s.find(name); i >= 0 {
		s.values[i] = v
		return
	}
	s.add(v)
}

// add appends a new name (libuci never removes one while parsing, so the
// index stays valid).
func (s *Section) add(v Value) {
	if s.index == nil {
		s.index = map[string]int{}
	}
	s.index[v.Name] = len(s.values)
	s.values = append(s.values, v)
}

// addList is uci_add_list, as the parser calls it.
func (s *Section) addList(name, value string, line int) {
	i := s.find(name)
	if i < 0 {
		s.add(Value{Name: name, List: true, Values: []string{value}, Lines: []int{line}})
		return
	}
	v := &s.values[i]
	v.List = true
	v.Values = append(slices.Clip(v.Values), value)
	v.Lines = append(slices.Clip(v.Lines), line)
}
