// JSON Schema to GBNF (grammar.h): the grammar of exactly the JSON texts a schema accepts, or a subset of them
// where generating every valid text is not needed (see below), so that constrained output always validates.
//
// Supported: type (object, array, string, number, integer, boolean, null, and arrays of these), properties,
// required, additionalProperties (false, true or a schema), enum, const, items, prefixItems, minItems, maxItems,
// minLength, maxLength, pattern (regex.h's subset), format (date, time, date-time, uuid, email), anyOf, oneOf,
// allOf of one schema, $ref to "#" and "#/..." pointers ($defs, definitions), integer minimum, maximum,
// exclusiveMinimum, exclusiveMaximum; true and {} mean any JSON value. Annotations (title, description, default,
// examples, $schema, $id, $comment, deprecated, readOnly, writeOnly) are ignored.
// Anything else raises SchemaError naming the keyword and where it is: a constraint is never silently dropped.
//
// The subset: object properties come in the schema's order; an object with declared properties gets no others (a
// schema allowing more is still satisfied); oneOf is generated as anyOf (branches that overlap can produce a value
// matching several); numbers have at most 16 integer digits, 16 decimals and a two-digit exponent; whitespace
// between tokens is bounded (a space, or a newline and up to 16 spaces or tabs).
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace ernie {

class SchemaError : public std::runtime_error {
 public:
  SchemaError(std::string keyword, const std::string& message)
      : std::runtime_error(message), keyword_(std::move(keyword)) {}
  const std::string& keyword() const { return keyword_; }  // the offending keyword ("" when the schema itself)

 private:
  std::string keyword_;
};

// GBNF whose root rule generates the values of `schema`.
std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema);

// GBNF for any JSON value (`object_only`: any JSON object), as response_format "json_object" asks.
std::string any_json_gbnf(bool object_only);

// `text` as a GBNF literal, quotes included.
std::string gbnf_literal(std::string_view text);

}  // namespace ernie
