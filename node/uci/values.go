package uci

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
// order uci keeps them (where each name first appeared, among the names
// still set): an `option` replaces whatever was there, a `list` appends
// (an `option` followed by a `list` is a list of both), and an empty value
// sets nothing: an empty `option` deletes the name, an empty `list`
// element is not added.
func (s *Section) Values() []Value {
	var out []Value
	find := func(name string) int {
		for i := range out {
			if out[i].Name == name {
				return i
			}
		}
		return -1
	}
	for _, o := range s.Options {
		i := find(o.Name)
		switch {
		case o.List && o.Value == "":
		case o.List && i >= 0:
			out[i].List = true
			out[i].Values = append(out[i].Values, o.Value)
			out[i].Lines = append(out[i].Lines, o.Line)
		case o.List:
			out = append(out, Value{Name: o.Name, List: true, Values: []string{o.Value}, Lines: []int{o.Line}})
		case o.Value == "" && i >= 0:
			out = append(out[:i], out[i+1:]...)
		case o.Value == "":
		case i >= 0:
			out[i] = Value{Name: o.Name, Values: []string{o.Value}, Lines: []int{o.Line}}
		default:
			out = append(out, Value{Name: o.Name, Values: []string{o.Value}, Lines: []int{o.Line}})
		}
	}
	return out
}

// Value returns the resolved value of name, and whether it is set.
func (s *Section) Value(name string) (Value, bool) {
	for _, v := range s.Values() {
		if v.Name == name {
			return v, true
		}
	}
	return Value{}, false
}
