// GraphiQL for punchcard: queries and mutations over HTTP POST /graphql, subscriptions over
// the graphql-transport-ws protocol on ws(s)://<this host>/graphql (graphql-ws client).
//
// The token comes from the URL's #token=<jwt> (serve --demo prints such a link), else from
// the live page's login (same origin, localStorage "punchcard.token"). It goes into the
// default headers (Authorization: Bearer ...) and the WebSocket's connection_init payload.
(function () {
  "use strict";
  var TOKEN_KEY = "punchcard.token";

  function takeToken() {
    var match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
    if (match) {
      var token = decodeURIComponent(match[1]);
      try { localStorage.setItem(TOKEN_KEY, token); } catch (e) { /* private mode */ }
      history.replaceState(null, "", location.pathname + location.search); // out of sight
      return token;
    }
    try { return localStorage.getItem(TOKEN_KEY); } catch (e) { return null; }
  }

  var token = takeToken();
  var headers = token ? { Authorization: "Bearer " + token } : {};
  var wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/graphql";
  var wsClient = graphqlWs.createClient({
    url: wsUrl,
    connectionParams: function () { return headers; },
    lazy: true,
    retryAttempts: 5,
  });
  var fetcher = GraphiQL.createFetcher({
    url: location.origin + "/graphql",
    wsClient: wsClient,
  });
  var defaultQuery = [
    "# punchcard: queries and mutations run over HTTP, subscriptions over the WebSocket.",
    "",
    "query Clients {",
    "  me { name }",
    "  clients(first: 20) {",
    "    nodes { id name purchases { id sessionsRemaining sessionsTotal revision } }",
    "  }",
    "}",
    "",
    "# Live: run this, then \"Use 1 Session\" on the page (or useSession here, in a second tab).",
    "# subscription Package($id: ID!) {",
    "#   purchaseUpdated(purchaseId: $id) { revision snapshot purchase { sessionsRemaining } }",
    "# }",
    "",
  ].join("\n");

  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: fetcher,
      defaultQuery: defaultQuery,
      defaultHeaders: JSON.stringify(headers, null, 2),
      shouldPersistHeaders: false, // the token stays out of GraphiQL's own storage
    })
  );
})();
