require "json"

# The few Chatwoot database records its email routing looks up (Channel::Email,
# Conversation, Message), read from a JSON fixture instead of a database.
#
# Default: config/chatwoot_fixture.json; env CHATWOOT_FIXTURE=/path/file.json
# picks another (the `server` launcher makes a relative path absolute against
# the directory it was started from). Loaded and checked once at boot; a bad
# fixture stops the server. Format: see README.md.
class ChatwootFixture
  DEFAULT_PATH = File.expand_path("../../config/chatwoot_fixture.json", __dir__)

  Inbox = Struct.new(:id, :name, :account_id, :email, :forward_to_email, keyword_init: true)
  Conversation = Struct.new(:uuid, :inbox, keyword_init: true)

  # What ActiveRecord's PostgreSQL uuid type accepts (OID::Uuid::ACCEPTABLE_UUID,
  # Rails 6.1 and 7): 32 hex digits, hyphens anywhere between groups of four,
  # optionally in braces. Anything else casts to nil and matches no row.
  ACCEPTABLE_UUID = /\A(\{)?([a-fA-F0-9]{4}-?){8}(?(1)\}|)\z/

  class << self
    def path
      ENV["CHATWOOT_FIXTURE"].presence ? File.expand_path(ENV["CHATWOOT_FIXTURE"]) : DEFAULT_PATH
    end

    def current
      @current ||= new(path)
    end

    # How PostgreSQL stores a uuid (lowercase, canonical hyphens), or nil if
    # ActiveRecord wouldn't accept the value as one.
    def canonical_uuid(value)
      value = value.to_s
      return nil unless value.match?(ACCEPTABLE_UUID)

      hex = value.delete("{}-").downcase
      "#{hex[0, 8]}-#{hex[8, 4]}-#{hex[12, 4]}-#{hex[16, 4]}-#{hex[20, 12]}"
    end
  end

  attr_reader :path, :inboxes, :conversations

  def initialize(path)
    @path = path
    data = JSON.parse(File.read(path))
    raise ArgumentError, "#{path}: top level must be an object" unless data.is_a?(Hash)

    @inboxes = Array(data["inboxes"]).each_with_index.map do |row, i|
      email = row["email"].to_s
      raise ArgumentError, "#{path}: inboxes[#{i}] needs an email" if email.empty?

      Inbox.new(
        id: row.fetch("id", i + 1),
        name: row["name"] || email,
        account_id: row.fetch("account_id", 1),
        email: email,
        forward_to_email: row["forward_to_email"].presence,
      )
    end
    @conversations = Array(data["conversations"]).each_with_index.map do |row, i|
      uuid = self.class.canonical_uuid(row["uuid"])
      raise ArgumentError, "#{path}: conversations[#{i}].uuid #{row["uuid"].inspect} is not a uuid" unless uuid

      inbox = @inboxes.find { |candidate| candidate.email.casecmp?(row["inbox"].to_s) }
      raise ArgumentError, "#{path}: conversations[#{i}].inbox #{row["inbox"].inspect} is no inbox's email" unless inbox

      Conversation.new(uuid: uuid, inbox: inbox)
    end
    @messages = Array(data["messages"]).each_with_index.map do |row, i|
      conversation = conversation_by_uuid(row["conversation"])
      raise ArgumentError, "#{path}: messages[#{i}].conversation #{row["conversation"].inspect} is unknown" unless conversation

      [row["source_id"].to_s, conversation]
    end
  end

  # Channel::Email.find_by('lower(email) = ? OR lower(forward_to_email) = ?', e, e):
  # the first inbox (fixture order standing in for the table's) whose address,
  # lowercased, equals the already normalized e.
  def channel_by_email(normalized_email)
    @inboxes.find do |inbox|
      inbox.email.downcase == normalized_email || inbox.forward_to_email&.downcase == normalized_email
    end
  end

  # Conversation.find_by(uuid: value), value a String or an Array of them (an
  # IN list), compared as PostgreSQL compares uuids.
  def conversation_by_uuid(value)
    wanted = Array(value).filter_map { |v| self.class.canonical_uuid(v) }
    @conversations.find { |conversation| wanted.include?(conversation.uuid) }
  end

  # Message.find_by(source_id: value)&.conversation; value a String or an Array
  # (an IN list; source_id is a plain, case-sensitive string column). The
  # first row in fixture order wins, like the first row in table order.
  def conversation_by_message_source_id(value)
    wanted = Array(value).map(&:to_s)
    @messages.find { |source_id, _| wanted.include?(source_id) }&.last
  end

  # Message.exists?(source_id: value)
  def message_exists?(value)
    !conversation_by_message_source_id(value).nil?
  end
end
