#include "engine/grammar/json_schema.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "engine/grammar/regex.h"

namespace ernie {
namespace {

using Json = nlohmann::ordered_json;

// The shared pieces of JSON's syntax. Strings admit any character (escapes included, lone surrogates not: a \u
// escape of one would not parse); numbers stay within what a double holds.
constexpr const char* kPrimitives = R"(space ::= ( " " | "\n" [ \t]{0,16} )?
char ::= [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" ( [0-9a-cA-C] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [eEfF] [0-9a-fA-F]{3} ) )
string ::= "\"" char* "\""
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
number ::= integer ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?
boolean ::= "true" | "false"
null ::= "null"
value ::= object | array | string | number | boolean | null
object ::= "{" space ( string space ":" space value ( space "," space string space ":" space value )* )? space "}"
array ::= "[" space ( value ( space "," space value )* )? space "]"
)";

// Function-local statics, so that the tables exist whenever the compiler is first used (even during another file's
// static initialization).
const std::set<std::string>& annotations() {
  static const std::set<std::string> names = {"title", "description", "default",    "examples", "$schema",
                                              "$id",   "$comment",    "deprecated", "readOnly", "writeOnly",
                                              "$defs", "definitions", "$anchor"};
  return names;
}
const std::set<std::string>& keywords() {
  static const std::set<std::string> names = {"type",
                                              "properties",
                                              "required",
                                              "additionalProperties",
                                              "enum",
                                              "const",
                                              "items",
                                              "prefixItems",
                                              "minItems",
                                              "maxItems",
                                              "minLength",
                                              "maxLength",
                                              "pattern",
                                              "format",
                                              "anyOf",
                                              "oneOf",
                                              "allOf",
                                              "$ref",
                                              "minimum",
                                              "maximum",
                                              "exclusiveMinimum",
                                              "exclusiveMaximum"};
  return names;
}
const std::vector<std::string>& known_types() {
  static const std::vector<std::string> names = {"object", "array", "string", "number", "integer", "boolean", "null"};
  return names;
}

const std::map<std::string, std::string>& formats() {
  static const std::map<std::string, std::string> grammars = {
      {"date",
       R"([1-9] [0-9]{3} "-" ( ( "0" [13578] | "1" [02] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ) | ( "0" [469] | "11" ) "-" ( "0" [1-9] | [12] [0-9] | "30" ) | "02-" ( "0" [1-9] | "1" [0-9] | "2" [0-8] ) ))"},
      {"time",
       R"(( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ))"},
      {"uuid", R"([0-9a-f]{8} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{4} "-" [0-9a-f]{12})"},
      {"email",
       R"([a-z0-9_+-]{1,32} ( "." [a-z0-9_+-]{1,32} ){0,3} "@" [a-z0-9] ( [a-z0-9-]{0,30} [a-z0-9] )? ( "." [a-z] [a-z0-9]{0,15} ){1,3})"},
  };
  return grammars;
}

[[noreturn]] void refuse(const std::string& keyword, const std::string& where, const std::string& what) {
  throw SchemaError(keyword, "json_schema " + where + ": " + what);
}

// ---- integers in a range --------------------------------------------------------------------------------------------

constexpr int64_t kLargestInteger = 9'999'999'999'999'999;  // 16 digits, as the integer rule allows

std::string digits_range(char lo, char hi) {
  return lo == hi ? std::string("\"") + lo + "\"" : std::string("[") + lo + "-" + hi + "]";
}

// The decimal strings from x to y, both of one length (no leading zeros beyond what x and y have).
std::string same_length(const std::string& x, const std::string& y) {
  if (x.empty()) return "";
  if (x[0] == y[0]) {
    const std::string rest = same_length(x.substr(1), y.substr(1));
    return digits_range(x[0], y[0]) + (rest.empty() ? "" : " " + rest);
  }
  const size_t rest = x.size() - 1;
  const bool x_rest_zero = x.find_first_not_of('0', 1) == std::string::npos;
  const bool y_rest_nine = y.find_first_not_of('9', 1) == std::string::npos;
  std::vector<std::string> alternatives;
  char low = x[0], high = y[0];
  if (!x_rest_zero) {
    alternatives.push_back(digits_range(x[0], x[0]) + " " + same_length(x.substr(1), std::string(rest, '9')));
    ++low;
  }
  if (!y_rest_nine) --high;
  if (low <= high) {
    alternatives.push_back(digits_range(low, high) + (rest ? " [0-9]{" + std::to_string(rest) + "}" : ""));
  }
  if (!y_rest_nine) {
    alternatives.push_back(digits_range(y[0], y[0]) + " " + same_length(std::string(rest, '0'), y.substr(1)));
  }
  std::string out = "(";
  for (size_t i = 0; i < alternatives.size(); ++i) out += (i ? " | " : "") + alternatives[i];
  return out + ")";
}

// Non-negative integers in [a, b], split by number of digits.
std::string natural_range(int64_t a, int64_t b) {
  std::vector<std::string> alternatives;
  int64_t power = 1;  // 10^(digits - 1)
  for (int digits = 1; digits <= 16 && power <= b; ++digits, power *= 10) {
    const int64_t lo = std::max(a, digits == 1 ? int64_t{0} : power);
    const int64_t hi = std::min(b, power * 10 - 1);
    if (lo <= hi) alternatives.push_back(same_length(std::to_string(lo), std::to_string(hi)));
  }
  std::string out = "(";
  for (size_t i = 0; i < alternatives.size(); ++i) out += (i ? " | " : "") + alternatives[i];
  return out + ")";
}

std::string integer_range(int64_t lo, int64_t hi) {
  std::vector<std::string> alternatives;
  if (hi >= 0) alternatives.push_back(natural_range(std::max<int64_t>(lo, 0), hi));
  if (lo < 0) alternatives.push_back("\"-\" " + natural_range(std::max<int64_t>(1, -std::min<int64_t>(hi, -1)), -lo));
  return alternatives.size() == 1 ? alternatives[0] : "( " + alternatives[0] + " | " + alternatives[1] + " )";
}

// ---- the compiler ---------------------------------------------------------------------------------------------------

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const Json& root) : root_(root) {}

  std::string run() {
    const std::string top = visit(root_, "#");
    std::string out = "root ::= " + top + "\n";
    for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
    return out + kPrimitives;
  }

 private:
  // A named rule for `body`; identical bodies share one.
  std::string rule(const std::string& hint, const std::string& body) {
    if (const auto it = by_body_.find(body); it != by_body_.end()) return it->second;
    std::string name = "s" + std::to_string(rules_.size()) + "-" + hint;
    rules_.emplace_back(name, body);
    by_body_.emplace(body, name);
    return name;
  }

  static std::string child(const std::string& where, const std::string& step) { return where + "/" + step; }

  std::optional<int64_t> count(const Json& s, const char* keyword, const std::string& where) {
    const auto it = s.find(keyword);
    if (it == s.end()) return std::nullopt;
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > 100000) {
      refuse(keyword, where, std::string("'") + keyword + "' must be an integer in [0, 100000]");
    }
    return it->get<int64_t>();
  }

  std::string visit(const Json& s, const std::string& where) {
    // Schemas nest by recursion; the JSON's depth bounds it, and this bounds chains of references.
    struct Depth {
      int& depth;
      explicit Depth(int& d) : depth(++d) {}
      ~Depth() { --depth; }
    } guard(depth_);
    if (depth_ > 256) refuse("$ref", where, "the schema nests (through references) deeper than 256 levels");
    if (s.is_boolean()) {
      if (!s.get<bool>()) refuse("", where, "the schema 'false' admits no value");
      return "value";
    }
    if (!s.is_object()) refuse("", where, "a schema must be an object or a boolean");
    std::vector<std::string> constraints;
    for (const auto& [key, unused] : s.items()) {
      if (annotations().count(key)) continue;
      if (!keywords().count(key)) refuse(key, where, "the keyword '" + key + "' is not supported");
      constraints.push_back(key);
    }
    const auto only = [&](const char* keyword) {
      for (const std::string& k : constraints) {
        if (k != keyword) refuse(k, where, std::string("'") + k + "' beside '" + keyword + "' is not supported");
      }
    };
    if (s.contains("$ref")) {
      only("$ref");
      return reference(s["$ref"], where);
    }
    if (s.contains("allOf")) {
      only("allOf");
      const Json& all = s["allOf"];
      if (!all.is_array() || all.size() != 1) refuse("allOf", where, "'allOf' is supported with one schema only");
      return visit(all[0], child(where, "allOf/0"));
    }
    for (const char* keyword : {"anyOf", "oneOf"}) {
      if (!s.contains(keyword)) continue;
      only(keyword);
      const Json& branches = s[keyword];
      if (!branches.is_array() || branches.empty())
        refuse(keyword, where, std::string("'") + keyword + "' must be a non-empty array");
      std::string body;
      for (size_t i = 0; i < branches.size(); ++i) {
        body += (i ? " | " : "") + visit(branches[i], child(where, std::string(keyword) + "/" + std::to_string(i)));
      }
      return rule("alt", body);
    }
    const std::vector<std::string> types = types_of(s, where);
    if (s.contains("const")) return rule("const", literal_json(s["const"]));
    if (s.contains("enum")) return enumeration(s, types, where);
    if (types.empty()) return "value";
    std::string body;
    for (const std::string& type : types) body += (body.empty() ? "" : " | ") + typed(s, type, where);
    return types.size() == 1 && !body.empty() && body.find(' ') == std::string::npos ? body : rule("v", body);
  }

  // The schema's types: "type", else the types its keywords constrain, else none (any value).
  std::vector<std::string> types_of(const Json& s, const std::string& where) {
    std::vector<std::string> types;
    if (const auto it = s.find("type"); it != s.end()) {
      const Json list = it->is_array() ? *it : Json::array({*it});
      for (const Json& t : list) {
        if (!t.is_string() ||
            std::find(known_types().begin(), known_types().end(), t.get<std::string>()) == known_types().end()) {
          refuse("type", where, "unknown type " + t.dump());
        }
        types.push_back(t.get<std::string>());
      }
      if (types.empty()) refuse("type", where, "'type' must name at least one type");
      return types;
    }
    const auto any = [&](std::initializer_list<const char*> keys) {
      return std::any_of(keys.begin(), keys.end(), [&](const char* k) { return s.contains(k); });
    };
    if (any({"properties", "required", "additionalProperties"})) types.push_back("object");
    if (any({"items", "prefixItems", "minItems", "maxItems"})) types.push_back("array");
    if (any({"minLength", "maxLength", "pattern", "format"})) types.push_back("string");
    if (any({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})) types.push_back("integer");
    return types;
  }

  static bool has_type(const Json& v, const std::string& type) {
    if (type == "integer")
      return v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
    if (type == "number") return v.is_number();
    if (type == "string") return v.is_string();
    if (type == "boolean") return v.is_boolean();
    if (type == "null") return v.is_null();
    if (type == "object") return v.is_object();
    return v.is_array();
  }

  std::string literal_json(const Json& v) {
    return gbnf_literal(v.dump(-1, ' ', false, Json::error_handler_t::replace));
  }

  std::string enumeration(const Json& s, const std::vector<std::string>& types, const std::string& where) {
    const Json& values = s["enum"];
    if (!values.is_array() || values.empty()) refuse("enum", where, "'enum' must be a non-empty array");
    std::string body;
    for (const Json& v : values) {
      if (!types.empty() &&
          std::none_of(types.begin(), types.end(), [&](const std::string& t) { return has_type(v, t); }))
        continue;
      body += (body.empty() ? "" : " | ") + literal_json(v);
    }
    if (body.empty()) refuse("enum", where, "no value of 'enum' has the schema's type");
    return rule("enum", body);
  }

  std::string reference(const Json& ref, const std::string& where) {
    if (!ref.is_string() || !ref.get<std::string>().starts_with("#")) {
      refuse("$ref", where, "only references within the schema (\"#...\") are supported");
    }
    const std::string pointer = ref.get<std::string>();
    if (const auto it = refs_.find(pointer); it != refs_.end()) return it->second;
    const Json* target = &root_;
    try {
      if (pointer.size() > 1) target = &root_.at(Json::json_pointer(pointer.substr(1)));
    } catch (const Json::exception&) {
      refuse("$ref", where, "the reference '" + pointer + "' points at nothing");
    }
    // Named before the target is compiled, so a recursive schema refers to its own rule.
    const std::string name = "ref" + std::to_string(refs_.size());
    refs_.emplace(pointer, name);
    const std::string body = visit(*target, pointer);
    rules_.emplace_back(name, body);
    return name;
  }

  std::string typed(const Json& s, const std::string& type, const std::string& where) {
    if (type == "object") return object(s, where);
    if (type == "array") return array(s, where);
    if (type == "string") return string(s, where);
    if (type == "integer") return integer(s, where);
    if (type == "number") {
      for (const char* k : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
        if (s.contains(k)) refuse(k, where, std::string("'") + k + "' is supported for integers, not for numbers");
      }
      return "number";
    }
    return type;  // boolean, null
  }

  std::string object(const Json& s, const std::string& where) {
    const Json empty = Json::object();
    const Json& properties = s.contains("properties") ? s["properties"] : empty;
    if (!properties.is_object()) refuse("properties", where, "'properties' must be an object");
    std::vector<std::pair<std::string, const Json*>> members;
    for (const auto& [name, schema] : properties.items()) members.emplace_back(name, &schema);
    std::set<std::string> required;
    if (const auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) refuse("required", where, "'required' must be an array of names");
      for (const Json& name : *it) {
        if (!name.is_string()) refuse("required", where, "'required' must be an array of names");
        required.insert(name.get<std::string>());
        if (!properties.contains(name.get<std::string>())) members.emplace_back(name.get<std::string>(), nullptr);
      }
    }
    const Json* additional = s.contains("additionalProperties") ? &s["additionalProperties"] : nullptr;
    if (additional && !additional->is_boolean() && !additional->is_object()) {
      refuse("additionalProperties", where, "'additionalProperties' must be a boolean or a schema");
    }
    if (members.empty()) {
      if (additional && additional->is_boolean() && !additional->get<bool>()) return "( \"{\" space \"}\" )";
      const std::string v =
          additional && additional->is_object() ? visit(*additional, child(where, "additionalProperties")) : "value";
      const std::string member = "string space \":\" space " + v;
      return rule("map", "\"{\" space ( " + member + " ( space \",\" space " + member + " )* )? space \"}\"");
    }
    std::vector<std::string> pairs;
    for (const auto& [name, schema] : members) {
      const std::string v = schema ? visit(*schema, child(where, "properties/" + name)) : "value";
      pairs.push_back(literal_json(Json(name)) + " space \":\" space " + v);
    }
    // choice[i]: a member from i on comes next (the optional ones before it left out), then the rest; rest[i]: what
    // may follow once the members before i are settled, each after one shared separator. Factoring the separator out
    // keeps one parse per member that may come next, not three (the separator's whitespace forms). Built from the
    // end, without recursion: objects may declare thousands of properties.
    const size_t n = members.size();
    std::vector<bool> optional_from(n + 1, true);  // all members from i on are optional
    for (size_t i = n; i-- > 0;) optional_from[i] = optional_from[i + 1] && !required.count(members[i].first);
    std::vector<std::string> choice(n + 1), rest(n + 1);
    for (size_t i = n; i-- > 0;) {
      const std::string take = pairs[i] + (rest[i + 1].empty() ? "" : " " + rest[i + 1]);
      const bool skippable = !required.count(members[i].first) && i + 1 < n;
      choice[i] = rule("obj", skippable ? take + " | " + choice[i + 1] : take);
      rest[i] = optional_from[i] ? rule("obj", "( space \",\" space " + choice[i] + " )?")
                                 : rule("obj", "space \",\" space " + choice[i]);
    }
    const std::string members_rule = optional_from[0] ? "( " + choice[0] + " )?" : choice[0];
    return rule("object", "\"{\" space " + members_rule + " space \"}\"");
  }

  std::string array(const Json& s, const std::string& where) {
    const auto min_items = count(s, "minItems", where);
    const auto max_items = count(s, "maxItems", where);
    if (min_items && max_items && *max_items < *min_items) refuse("maxItems", where, "'maxItems' is below 'minItems'");
    const Json* items = s.contains("items") ? &s["items"] : nullptr;
    if (s.contains("prefixItems")) {
      if (min_items || max_items)
        refuse("prefixItems", where, "'prefixItems' with 'minItems' or 'maxItems' is not supported");
      const Json& prefix = s["prefixItems"];
      if (!prefix.is_array() || prefix.empty()) refuse("prefixItems", where, "'prefixItems' must be a non-empty array");
      std::string body = "\"[\" space";
      for (size_t i = 0; i < prefix.size(); ++i) {
        body += (i ? " space \",\" space " : " ") + visit(prefix[i], child(where, "prefixItems/" + std::to_string(i)));
      }
      if (!(items && items->is_boolean() && !items->get<bool>())) {
        const std::string more = items ? visit(*items, child(where, "items")) : "value";
        body += " ( space \",\" space " + more + " )*";
      }
      return rule("tuple", body + " space \"]\"");
    }
    const std::string item = items ? visit(*items, child(where, "items")) : "value";
    const int64_t low = min_items.value_or(0);
    if (max_items && *max_items == 0) return "( \"[\" space \"]\" )";
    const std::string more_low = std::to_string(std::max<int64_t>(low - 1, 0));
    const std::string more = "( space \",\" space " + item + " ){" + more_low + "," +
                             (max_items ? std::to_string(*max_items - 1) : "") + "}";
    const std::string list = item + " " + more;
    return rule("array", "\"[\" space " + (low == 0 ? "( " + list + " )?" : list) + " space \"]\"");
  }

  std::string string(const Json& s, const std::string& where) {
    const auto min_length = count(s, "minLength", where);
    const auto max_length = count(s, "maxLength", where);
    const bool lengths = min_length || max_length;
    if (const auto it = s.find("format"); it != s.end()) {
      if (lengths || s.contains("pattern"))
        refuse("format", where, "'format' with 'pattern', 'minLength' or 'maxLength' is not supported");
      if (!it->is_string()) refuse("format", where, "'format' must be a string");
      const std::string format = it->get<std::string>();
      if (format == "date-time")
        return rule("date-time",
                    "\"\\\"\" " + group(formats().at("date")) + " \"T\" " + group(formats().at("time")) + " \"\\\"\"");
      const auto known = formats().find(format);
      if (known == formats().end())
        refuse("format", where,
               "the format '" + format + "' is not supported (date, time, date-time, uuid, email are)");
      return rule(format, "\"\\\"\" " + group(known->second) + " \"\\\"\"");
    }
    if (const auto it = s.find("pattern"); it != s.end()) {
      if (lengths) refuse("pattern", where, "'pattern' with 'minLength' or 'maxLength' is not supported");
      if (!it->is_string()) refuse("pattern", where, "'pattern' must be a string");
      return rule("pattern", "\"\\\"\" " + group(regex_to_gbnf(it->get<std::string>())) + " \"\\\"\"");
    }
    if (!lengths) return "string";
    if (min_length && max_length && *max_length < *min_length)
      refuse("maxLength", where, "'maxLength' is below 'minLength'");
    return rule("string", "\"\\\"\" char{" + std::to_string(min_length.value_or(0)) + "," +
                              (max_length ? std::to_string(*max_length) : "") + "} \"\\\"\"");
  }

  static std::string group(const std::string& expression) { return "( " + expression + " )"; }

  std::string integer(const Json& s, const std::string& where) {
    int64_t lo = -kLargestInteger, hi = kLargestInteger;
    bool bounded = false;
    const auto bound = [&](const char* keyword, bool lower, bool exclusive) {
      const auto it = s.find(keyword);
      if (it == s.end()) return;
      if (!it->is_number()) refuse(keyword, where, std::string("'") + keyword + "' must be a number");
      const double v = it->get<double>();
      double b =
          lower ? (exclusive ? std::floor(v) + 1 : std::ceil(v)) : (exclusive ? std::ceil(v) - 1 : std::floor(v));
      b = std::clamp(b, -static_cast<double>(kLargestInteger), static_cast<double>(kLargestInteger));
      if (lower)
        lo = std::max(lo, static_cast<int64_t>(b));
      else
        hi = std::min(hi, static_cast<int64_t>(b));
      bounded = true;
    };
    bound("minimum", true, false);
    bound("exclusiveMinimum", true, true);
    bound("maximum", false, false);
    bound("exclusiveMaximum", false, true);
    if (!bounded) return "integer";
    if (lo > hi) refuse("minimum", where, "no integer lies within the bounds");
    return rule("int", integer_range(lo, hi));
  }

  const Json& root_;
  int depth_ = 0;
  std::vector<std::pair<std::string, std::string>> rules_;
  std::map<std::string, std::string> by_body_;
  std::map<std::string, std::string> refs_;
};

}  // namespace

std::string gbnf_literal(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (b < 0x20 || b == 0x7F) {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\x%02X", b);
      out += buffer;
    } else {
      out += c;  // UTF-8 passes through as the code points it encodes
    }
  }
  return out + "\"";
}

std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema) {
  return SchemaCompiler(schema).run();
}

std::string any_json_gbnf(bool object_only) {
  return std::string("root ::= ") + (object_only ? "object" : "value") + "\n" + kPrimitives;
}

}  // namespace ernie
