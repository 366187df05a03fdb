package image

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// qemu's JSON reader, as json: names meet it (qobject/json-lexer.c,
// json-streamer.c, json-parser.c): its extensions (single-quoted strings,
// \' escapes) and its error messages, which Go's decoder words otherwise.

// jsonNestingLimit is qemu's MAX_NESTING.
const jsonNestingLimit = 1024

type qjTokenKind byte

const (
	qjPunct   qjTokenKind = iota // { } [ ] , :
	qjString                     // the quoted text, escapes undone by the parser
	qjInteger                    // digits, with a sign
	qjFloat
	qjKeyword // a run of a-z
	qjError   // what the lexer could not read, up to the offending byte
)

type qjToken struct {
	kind qjTokenKind
	text string
}

// qjLex splits text into tokens as qemu's lexer does: white space
// separates, a token ends at the first byte that cannot continue it, and
// a byte that can neither continue nor end one is an error token.
func qjLex(text string) []qjToken {
	var toks []qjToken
	for i := 0; i < len(text); {
		c := text[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case strings.IndexByte("{}[],:", c) >= 0:
			toks = append(toks, qjToken{qjPunct, text[i : i+1]})
			i++
		case c == '"' || c == '\'':
			tok, n := qjLexString(text[i:])
			toks = append(toks, tok)
			i += n
		case c == '-' || c >= '0' && c <= '9':
			tok, n := qjLexNumber(text[i:])
			toks = append(toks, tok)
			i += n
		case c >= 'a' && c <= 'z':
			n := 1
			for n < len(text[i:]) && text[i+n] >= 'a' && text[i+n] <= 'z' {
				n++
			}
			tok, n := qjTerminal(text[i:], n, qjKeyword)
			toks = append(toks, tok)
			i += n
		default:
			return append(toks, qjToken{qjError, text[i : i+1]})
		}
		if len(toks) > 0 && toks[len(toks)-1].kind == qjError {
			return toks // the streamer reports it; what follows does not matter
		}
	}
	return toks
}

// qjLexString reads a quoted string; control characters and the bytes
// 0xFE and 0xFF end it as an error, and so does the end of the text.
func qjLexString(s string) (qjToken, int) {
	quote := s[0]
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c >= 0xFE:
			return qjToken{qjError, s[:i+1]}, i + 1
		case c == '\\':
			if i+1 < len(s) && (s[i+1] < 0x20 || s[i+1] >= 0xFE) {
				return qjToken{qjError, s[:i+2]}, i + 2
			}
			i++
		case c == quote:
			return qjToken{qjString, s[:i+1]}, i + 1
		}
	}
	return qjToken{qjError, s}, len(s)
}

// qjLexNumber reads a number as qemu's lexer table does: 0 | -?[1-9]
// digits, then .digits, then e[+-]digits (not after a bare 0, which
// ends there); a digit after a leading 0, or a sign, point or exponent
// with no digit after it, is an error that takes the offending byte.
func qjLexNumber(s string) (qjToken, int) {
	i := 0
	fail := func() (qjToken, int) {
		n := min(i+1, len(s))
		return qjToken{qjError, s[:n]}, n
	}
	isDigit := func() bool { return i < len(s) && s[i] >= '0' && s[i] <= '9' }
	digits := func() bool {
		if !isDigit() {
			return false
		}
		for isDigit() {
			i++
		}
		return true
	}
	if s[0] == '-' {
		i++
		if !isDigit() {
			return fail()
		}
	}
	kind := qjInteger
	if s[i] == '0' {
		i++
		if isDigit() {
			return fail()
		}
		if i < len(s) && s[i] == '.' {
			i++
			if !digits() {
				return fail()
			}
			kind = qjFloat
		} else {
			return qjTerminal(s, i, kind)
		}
	} else {
		digits()
		if i < len(s) && s[i] == '.' {
			i++
			if !digits() {
				return fail()
			}
			kind = qjFloat
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if !digits() {
			return fail()
		}
		kind = qjFloat
	}
	return qjTerminal(s, i, kind)
}

// qjTerminal ends a token that needed a byte of lookahead.
func qjTerminal(s string, n int, kind qjTokenKind) (qjToken, int) {
	return qjToken{kind, s[:n]}, n
}

// qjValue is a parsed JSON value.
type qjValue struct {
	kind  optKind // optStr, optNum, optBool, optNull; 0 for containers
	text  string
	keys  []string // an object's members, in order
	obj   map[string]*qjValue
	items []*qjValue
	isObj bool
}

// qjParse reads text as qemu's qobject_from_json: exactly one value.
func qjParse(text string) (*qjValue, error) {
	toks := qjLex(text)
	var result *qjValue
	for len(toks) > 0 {
		msg, n, err := qjMessage(toks)
		var v *qjValue
		if err == nil {
			p := &qjParser{toks: msg}
			v, err = p.value()
		}
		if result != nil {
			return nil, jsonParseError("Expecting at most one JSON value")
		}
		if err != nil {
			return nil, err
		}
		result = v
		toks = toks[n:]
	}
	if result == nil {
		return nil, jsonParseError("Expecting a JSON value")
	}
	return result, nil
}

// qjMessage is the streamer's cut: the tokens up to the one that closes
// the first value, or to the end of the text; n counts them. An error
// token, or nesting deeper than qemu allows, ends it as an error.
func qjMessage(toks []qjToken) (msg []qjToken, n int, err error) {
	braces, brackets := 0, 0
	for i, t := range toks {
		if t.kind == qjError {
			return nil, i + 1, qjParseError("stray '" + t.text + "'")
		}
		if t.kind == qjPunct {
			switch t.text {
			case "{":
				braces++
			case "}":
				braces--
			case "[":
				brackets++
			case "]":
				brackets--
			}
		}
		if braces+brackets > jsonNestingLimit {
			return nil, i + 1, jsonParseError("JSON nesting depth limit exceeded")
		}
		if (braces > 0 || brackets > 0) && braces >= 0 && brackets >= 0 {
			continue
		}
		return toks[:i+1], i + 1, nil
	}
	return toks, len(toks), nil
}

// qjParser is qemu's recursive-descent parser over one message.
type qjParser struct {
	toks []qjToken
}

func (p *qjParser) peek() (qjToken, bool) {
	if len(p.toks) == 0 {
		return qjToken{}, false
	}
	return p.toks[0], true
}

func (p *qjParser) pop() (qjToken, bool) {
	t, ok := p.peek()
	if ok {
		p.toks = p.toks[1:]
	}
	return t, ok
}

func qjParseError(what string) error { return jsonParseError("JSON parse error, " + what) }

var errPrematureEOI = qjParseError("premature EOI")

func (p *qjParser) value() (*qjValue, error) {
	t, ok := p.peek()
	if !ok {
		return nil, errPrematureEOI
	}
	switch {
	case t.kind == qjPunct && t.text == "{":
		return p.object()
	case t.kind == qjPunct && t.text == "[":
		return p.array()
	case t.kind == qjString:
		p.pop()
		s, err := qjUnquote(t.text)
		return &qjValue{kind: optStr, text: s}, err
	case t.kind == qjInteger || t.kind == qjFloat:
		p.pop()
		return &qjValue{kind: optNum, text: qjNumberText(t)}, nil
	case t.kind == qjKeyword:
		p.pop()
		switch t.text {
		case "true":
			return &qjValue{kind: optBool, text: "on"}, nil
		case "false":
			return &qjValue{kind: optBool, text: "off"}, nil
		case "null":
			return &qjValue{kind: optNull}, nil
		}
		return nil, qjParseError("invalid keyword '" + t.text + "'")
	}
	return nil, qjParseError("expecting value")
}

func (p *qjParser) object() (*qjValue, error) {
	p.pop()
	v := &qjValue{isObj: true, obj: map[string]*qjValue{}}
	t, ok := p.peek()
	if !ok {
		return nil, errPrematureEOI
	}
	if t.kind == qjPunct && t.text == "}" {
		p.pop()
		return v, nil
	}
	for {
		if err := p.pair(v); err != nil {
			return nil, err
		}
		t, ok := p.pop()
		if !ok {
			return nil, errPrematureEOI
		}
		if t.kind == qjPunct && t.text == "}" {
			return v, nil
		}
		if t.kind != qjPunct || t.text != "," {
			return nil, qjParseError("expected separator in dict")
		}
	}
}

func (p *qjParser) pair(obj *qjValue) error {
	if _, ok := p.peek(); !ok {
		return errPrematureEOI
	}
	key, err := p.value()
	if err != nil {
		return err
	}
	if key.kind != optStr {
		return qjParseError("key is not a string in object")
	}
	t, ok := p.pop()
	if !ok {
		return errPrematureEOI
	}
	if t.kind != qjPunct || t.text != ":" {
		return qjParseError("missing : in object pair")
	}
	val, err := p.value()
	if err != nil {
		return err
	}
	if _, dup := obj.obj[key.text]; dup {
		return qjParseError("duplicate key")
	}
	obj.keys = append(obj.keys, key.text)
	obj.obj[key.text] = val
	return nil
}

func (p *qjParser) array() (*qjValue, error) {
	p.pop()
	v := &qjValue{}
	t, ok := p.peek()
	if !ok {
		return nil, errPrematureEOI
	}
	if t.kind == qjPunct && t.text == "]" {
		p.pop()
		return v, nil
	}
	for {
		it, err := p.value()
		if err != nil {
			return nil, err
		}
		v.items = append(v.items, it)
		t, ok := p.pop()
		if !ok {
			return nil, errPrematureEOI
		}
		if t.kind == qjPunct && t.text == "]" {
			return v, nil
		}
		if t.kind != qjPunct || t.text != "," {
			return nil, qjParseError("expected separator in list")
		}
	}
}

// qjNumberText is a number as qemu turns it into an option's text
// (qnum_to_string): an integer within int64 or uint64 as it is, anything
// else as the double it becomes, in %.17g.
func qjNumberText(t qjToken) string {
	if t.kind == qjInteger {
		if v, err := strconv.ParseInt(t.text, 10, 64); err == nil {
			return strconv.FormatInt(v, 10)
		}
		if v, err := strconv.ParseUint(t.text, 10, 64); err == nil {
			return strconv.FormatUint(v, 10)
		}
	}
	f, _ := strconv.ParseFloat(t.text, 64)
	return fmt.Sprintf("%.17g", f)
}

// qjUnquote undoes a string token's quotes and escapes as qemu's
// parse_string: the JSON escapes and \', \uXXXX with surrogate pairs,
// no NUL, valid UTF-8 only.
func qjUnquote(tok string) (string, error) {
	s := tok[1:] // the closing quote stays: a short \u escape names it
	var b strings.Builder
	for i := 0; i < len(s)-1; {
		c := s[i]
		if c != '\\' {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n <= 1 {
				return "", qjParseError("invalid UTF-8 sequence in string")
			}
			b.WriteString(s[i : i+n])
			i += n
			continue
		}
		e := s[i+1]
		i += 2
		if r, ok := qjEscapes[e]; ok {
			b.WriteRune(r)
			continue
		}
		if e != 'u' {
			return "", qjParseError("invalid escape sequence in string")
		}
		r, n, err := qjUnicodeEscape(s[i:])
		if err != nil {
			return "", err
		}
		b.WriteRune(r)
		i += n
	}
	return b.String(), nil
}

// qjEscapes are the one-letter escapes of qemu's JSON strings.
var qjEscapes = map[byte]rune{'"': '"', '\'': '\'', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// qjUnicodeEscape reads the XXXX of a \uXXXX escape, and the second
// half of a surrogate pair; n is how many bytes after "\u" it took. A
// code point qemu cannot encode is refused naming the escape as written
// (six bytes from the backslash, as far as the string goes).
func qjUnicodeEscape(s string) (rune, int, error) {
	cp, n := qjHex4(s), 4
	if cp >= 0xD800 && cp <= 0xDBFF && strings.HasPrefix(s[min(4, len(s)):], "\\u") {
		lo := qjHex4(s[6:])
		if lo >= 0xDC00 && lo <= 0xDFFF {
			cp, n = 0x10000+(cp&0x3FF)<<10|lo&0x3FF, 10
		} else {
			cp = -1
		}
	}
	if cp < 0 || cp >= 0xD800 && cp <= 0xDFFF {
		return 0, 0, qjParseError(fmt.Sprintf("\\u%s is not a valid Unicode character", s[:min(4, len(s))]))
	}
	return rune(cp), n, nil
}

// qjHex4 is the value of four hex digits, -1 when they are not.
func qjHex4(s string) int {
	if len(s) < 4 {
		return -1
	}
	v, err := strconv.ParseUint(s[:4], 16, 16)
	if err != nil || strings.ContainsAny(s[:4], "+-") {
		return -1
	}
	return int(v)
}
