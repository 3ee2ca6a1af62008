// A JSON Schema "pattern" as GBNF over the characters of a JSON string, as they are written inside the quotes:
// a '"' in the regex's language is generated as \" and a control character as its escape, so the string's value is
// what the regex matches.
//
// The subset (ECMA-262 syntax, which JSON Schema uses): literals, ., [classes] with ranges and negation, \d \w \s
// \D \W \S, \t \n \r \f \v \xHH \uHHHH and escaped metacharacters, groups ( ) and (?: ), alternation |, and the
// quantifiers * + ? {m} {m,} {m,n} (lazy forms too: same language). ^ and $ only at the ends. The generated string
// matches the whole pattern, which also satisfies a pattern's search semantics. Backreferences, lookaround, \b and
// anything else raise SchemaError for "pattern", naming the construct.
#pragma once

#include <string>
#include <string_view>

namespace ernie {

std::string regex_to_gbnf(std::string_view pattern);

}  // namespace ernie
