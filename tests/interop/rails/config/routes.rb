# Action Mailbox's ingress routes (/rails/action_mailbox/...) are added by its engine.
Rails.application.routes.draw do
  get "/healthz", to: ->(_env) { [200, { "Content-Type" => "text/plain" }, ["ok"]] }
end
