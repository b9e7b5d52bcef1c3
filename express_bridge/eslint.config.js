"use strict";
/**
 * ESLint (flat config), run by `npm test` before the tests (`npm run lint`).
 * The recommended rules, plus a few that catch real mistakes in this code
 * base's style: CommonJS, Node globals, no `var`, strict equality.
 */

const js = require("@eslint/js");
const globals = require("globals");

module.exports = [
  { ignores: ["node_modules/", "vendor/"] },
  js.configs.recommended,
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: "commonjs",
      globals: { ...globals.node },
    },
    rules: {
      "no-unused-vars": ["error", { args: "after-used", argsIgnorePattern: "^_", caughtErrors: "none" }],
      "no-var": "error",
      "prefer-const": "error",
      eqeqeq: ["error", "always", { null: "ignore" }],
      strict: ["error", "global"],
      "no-return-await": "off",
      "no-throw-literal": "error",
      "no-constant-binary-expression": "error",
      "object-shorthand": ["error", "properties"],
    },
  },
  {
    // The page's scripts run in the browser.
    files: ["public/**/*.js"],
    languageOptions: { sourceType: "script", globals: { ...globals.browser } },
  },
  {
    // Functions this test hands to the browser (page.evaluate) use its globals.
    files: ["test/page.test.js", "test/calls_view.test.js"],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
  },
];
