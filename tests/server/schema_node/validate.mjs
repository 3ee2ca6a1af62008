// Validates answers against their JSON Schemas with Ajv (draft 2020-12, formats from ajv-formats).
// Usage: node validate.mjs CASES.json, where the file holds [{"schema": {...}, "text": "..."}]. Prints one line per
// invalid answer and exits 1 if there is any; otherwise prints "valid N".
import { readFileSync } from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
let invalid = 0;
for (const [i, c] of cases.entries()) {
  let value;
  try {
    value = JSON.parse(c.text);
  } catch (e) {
    console.log(`case ${i}: not JSON (${e.message}): ${JSON.stringify(c.text)}`);
    invalid++;
    continue;
  }
  const validate = ajv.compile(c.schema);
  if (!validate(value)) {
    console.log(`case ${i}: ${ajv.errorsText(validate.errors)}: ${JSON.stringify(c.text)} against ${JSON.stringify(c.schema)}`);
    invalid++;
  }
}
console.log(invalid ? `invalid ${invalid} of ${cases.length}` : `valid ${cases.length}`);
process.exit(invalid ? 1 : 0);
