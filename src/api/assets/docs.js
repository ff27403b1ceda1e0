// Starts Swagger UI on /docs with this gateway's document, loaded by URL: the page has no
// inline script, so its Content-Security-Policy can forbid them.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // The default sends the document to validator.swagger.io for a badge.
  validatorUrl: null,
});
