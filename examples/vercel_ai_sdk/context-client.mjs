// Calls the customer-context fetch API: the execution half of the Vercel AI SDK tool in
// customer-context-tool.ts. Plain ESM (Node 18+ global fetch), so it runs without a build step;
// the test suite runs it against the local stack (tests/e2e/test_examples.py).

/**
 * @param {{identifier_type: string, identifier_value: string, fields?: string[], sections?: string[],
 *          format?: "json" | "text", max_tokens?: number}} args
 * @param {{baseUrl: string, apiKey: string}} options
 * @returns {Promise<string | object>} prompt text, the JSON context, or {error, code, message}
 */
export async function getCustomerContext(args, { baseUrl, apiKey }) {
  const { identifier_type, identifier_value, fields, sections, format = "text", max_tokens } = args;
  const query = new URLSearchParams({ format });
  if (fields?.length) query.set("fields", fields.join(","));
  if (sections?.length) query.set("sections", sections.join(","));
  if (max_tokens) query.set("max_tokens", String(max_tokens));
  const url = `${baseUrl.replace(/\/$/, "")}/v1/context/${encodeURIComponent(identifier_type)}/` +
    `${encodeURIComponent(identifier_value)}?${query}`;
  const response = await fetch(url, { headers: { authorization: `Bearer ${apiKey}` } });
  const type = response.headers.get("content-type") ?? "";
  const body = type.startsWith("application/json") ? await response.json() : await response.text();
  // errors go back to the model as data, so it can recover (wrong identifier, out-of-scope field …)
  return response.ok ? body : { error: response.status, ...body };
}

/** The tool definitions our API generates from context.yaml (for the key's scope). */
export async function listTools({ baseUrl, apiKey }) {
  const response = await fetch(`${baseUrl.replace(/\/$/, "")}/v1/tools?style=openai`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  return (await response.json()).tools;
}
