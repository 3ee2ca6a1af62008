// The filters, tests and global functions the interpreter knows, and how calls bind their arguments. The parser
// checks names against these lists (an unknown filter or test is a parse error, as in jinja2; the unsupported
// ones get a clearer message). The renderer implements them: globals and str/dict/list methods in builtins.cpp,
// filters and tests in filters.cpp, each following jinja2's definitions (jinja2/filters.py, jinja2/tests.py).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace ernie::jinja {

inline const std::vector<std::string_view> kFilters = {
    "abs",     "capitalize", "count",       "d",      "default", "dictsort",   "e",      "escape",
    "first",   "float",      "forceescape", "indent", "int",     "items",      "join",   "last",
    "length",  "list",       "lower",       "map",    "max",     "min",        "reject", "rejectattr",
    "replace", "reverse",    "round",       "safe",   "select",  "selectattr", "sort",   "string",
    "sum",     "title",      "tojson",      "trim",   "unique",  "upper"};
// jinja2 filters deliberately left out; naming one is a parse error "unsupported filter".
inline const std::vector<std::string_view> kUnsupportedFilters = {
    "attr",  "batch",     "center",   "filesizeformat", "format", "groupby",   "pprint",   "random",
    "slice", "striptags", "truncate", "urlencode",      "urlize", "wordcount", "wordwrap", "xmlattr"};
inline const std::vector<std::string_view> kTests = {
    "boolean",  "callable", "defined", "divisibleby", "eq",        "equalto", "escaped", "even",     "false",
    "filter",   "float",    "ge",      "greaterthan", "gt",        "in",      "integer", "iterable", "le",
    "lessthan", "lower",    "lt",      "mapping",     "ne",        "none",    "number",  "odd",      "sameas",
    "sequence", "string",   "test",    "true",        "undefined", "upper"};
// Global functions; a template variable of the same name shadows one.
inline const std::vector<std::string_view> kBuiltins = {"dict", "namespace", "raise_exception", "range",
                                                        "strftime_now"};

bool contains(const std::vector<std::string_view>& list, std::string_view name);

// Bound parameters, in the order named; nullopt where not given.
using Bound = std::vector<std::optional<Value>>;

// Maps call arguments onto parameters that may be given positionally or by keyword, as Python does.
Bound bind(const Args& args, std::initializer_list<const char*> names, const std::string& fn, int line);
// bound[index], failing "<fn>() missing required argument '<name>'" when it was not given.
const Value& required(const Bound& bound, size_t index, const char* name, const std::string& fn, int line);
// An argument that must be a str / an int; `what` names it in the error.
const std::string& str_arg(const Value& v, const char* what, int line);
int64_t int_arg(const Value& v, const char* what, int line);
// An optional str argument, None counting as not given.
std::optional<std::string> opt_str(const std::optional<Value>& v, const char* what, int line);

}  // namespace ernie::jinja
