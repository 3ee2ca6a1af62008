// Python's operators on values, as jinja2 applies them: attribute and item access, slicing, iteration,
// arithmetic (64-bit ints: overflow is an error, not a bignum), membership and comparison. Results are new
// values or children sharing the operand's data; errors are ernie::Error at `line`, where Python raises.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/jinja/value.h"

namespace ernie::jinja {

// "'<type> object' has no attribute '<name>'".
std::string missing_attr(const Value& obj, const std::string& name);
// obj.name: a dict's key, a namespace's attribute; anything else is undefined (jinja2 falls back to item lookup
// and returns Undefined on a miss). Only an undefined object raises.
Value get_attr(const Value& obj, const std::string& name, int line);
// obj[key]: a dict's key or namespace attribute, a list element or string unit (negative indices from the end);
// a miss is undefined. Only an undefined object raises.
Value get_item(const Value& obj, const Value& key, int line);
// CPython's slice.indices(): the indices a slice selects from a sequence of `size`.
std::vector<size_t> slice_indices(size_t size, std::optional<int64_t> start, std::optional<int64_t> stop,
                                  std::optional<int64_t> step, int line);
// What a for loop walks: list elements, dict keys, string units; undefined is empty.
std::vector<Value> iterate(const Value& v, int line);

// -v, failing on overflow.
int64_t negate(int64_t v, int line);
// a <op> b for op in + - * / // % **, with Python's numeric, str and list rules.
Value arithmetic(const std::string& op, const Value& a, const Value& b, int line);
// `item in container`.
bool contains_value(const Value& container, const Value& item, int line);
// a <op> b for op in == != < <= > >= in, not in.
bool compare(const std::string& op, const Value& a, const Value& b, int line);

}  // namespace ernie::jinja
