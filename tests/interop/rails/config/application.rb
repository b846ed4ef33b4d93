# Minimal Rails 6.1 app (Debian bookworm system gems, no Bundler) that exposes
# Action Mailbox's relay ingress and records every routed message.
require "rails"
require "active_record/railtie"
require "active_storage/engine"
require "action_controller/railtie"
require "active_job/railtie"
require "action_mailbox/engine"

module InteropRails
  # Where everything at runtime goes (db, blobs, logs, received.jsonl). The
  # `server` launcher always sets DATA_DIR; the fallback only matters for
  # manual use (the ingress rake tasks never initialize the app).
  DATA_DIR = File.expand_path(ENV["DATA_DIR"] || File.join(__dir__, "..", "tmp", "data"))

  class Application < Rails::Application
    config.load_defaults 6.1
    config.root = File.expand_path("..", __dir__)

    config.eager_load = true
    config.cache_classes = true
    config.consider_all_requests_local = false
    config.require_master_key = false
    config.secret_key_base = ENV["SECRET_KEY_BASE"] || ("0123456789abcdef" * 8)

    # Log to $DATA_DIR/rails.log only when running as the server.
    if ENV["DATA_DIR"]
      config.logger = ActiveSupport::Logger.new(File.join(DATA_DIR, "rails.log"))
    end
    config.log_level = :info
    config.colorize_logging = false

    config.active_job.queue_adapter = :inline
    config.active_storage.service = :local
    config.active_record.dump_schema_after_migration = false

    config.action_mailbox.ingress = (ENV["INGRESS"].presence || "relay").to_sym
    # The inline adapter can't schedule the future IncinerationJob.
    config.action_mailbox.incinerate = false

    # One request at a time, like Puma with one thread. Rails 6.1 on SQLite
    # fails concurrent writers with "database is locked" (seen under
    # `import --jobs 4`); with inline jobs that can fail routing after the
    # InboundEmail row is committed, and the retry of the same bytes is then
    # deduplicated and never processed. Chatwoot (PostgreSQL, Sidekiq) has no
    # such failure; the clients' concurrency is still exercised at HTTP level.
    config.middleware.insert_before 0, Rack::Lock

    # Chatwoot's records for the routing decision (app/models/chatwoot_fixture.rb):
    # config/chatwoot_fixture.json or $CHATWOOT_FIXTURE, read and checked at
    # boot so that a bad fixture stops the server instead of every message.
    config.after_initialize { ChatwootFixture.current }
  end
end
