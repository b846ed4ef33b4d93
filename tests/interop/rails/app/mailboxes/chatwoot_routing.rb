# Where Chatwoot would put an inbound email, decided like Chatwoot decides it:
# from the headers alone, on the same Mail::Message object (the mail gem that
# Rails 6.1 ships, 2.7.1 on Debian bookworm), with a ChatwootFixture standing
# in for the database.
#
# Ported from chatwoot/chatwoot (develop), as read in the public code index:
# - app/mailboxes/application_mailbox.rb at commit
#   044fc8c46afd232059bf64e3225c73f02c94bccc: the three routes in order
#   (reply, support, catch-all default) and their predicates
#   valid_to_address?, reply_uuid_mail?, in_reply_to_mail? (In-Reply-To, then
#   the References fallback) and the three patterns below;
# - app/finders/email_channel_finder.rb as changed by PR #12484
#   ("feat: add SKIP_INCOMING_BCC_PROCESSING as internal config"): To + Cc +
#   the value of X-Original-To first, then Bcc, skipping Bcc matches of
#   accounts listed in SKIP_INCOMING_BCC_PROCESSING; (the index names no
#   chatwoot/chatwoot commit for that version, only the PR);
# - app/mailboxes/reply_mailbox.rb (the version with the References fallback
#   and no exception when the conversation is missing; its predecessor at
#   018a903d12c74a8447cc586fde7d233591de9b07 raised instead: the email is not
#   stored either way), MailPresenter#mail_receiver, and
#   EmailHelper#normalize_email_with_plus_addressing;
# - app/mailboxes/default_mailbox.rb: `def process; end`, i.e. dropped.
# MAILER_INBOUND_EMAIL_DOMAIN plays no part in any of this: Chatwoot matches
# reply+<uuid>@ with any domain, and an inbox by its stored addresses.
# Not modelled: what SupportMailbox/ReplyMailbox do after routing (skipping
# inactive accounts, Chatwoot's own notification emails, senders that aren't
# valid addresses, attachments...).
#
# ChatwootRouting.new(mail).route returns the recorded `route` (README.md):
#   {kind: "conversation", uuid:, inbox:, via: "to"|"x_forwarded_for"|"in_reply_to"|"references"}
#   {kind: "inbox", inbox:, via: "to"|"cc"|"x_original_to"|"bcc", address:}
#   {kind: "dropped", why:, detail:}
class ChatwootRouting
  # ApplicationMailbox's patterns, verbatim.
  REPLY_EMAIL_UUID_PATTERN = /^reply\+([0-9a-f]{8}\b-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-\b[0-9a-f]{12})$/i
  CONVERSATION_MESSAGE_ID_PATTERN = %r{conversation/([a-zA-Z0-9-]*?)/messages/(\d+?)@(\w+\.\w+)}
  CONVERSATION_FALLBACK_ID_PATTERN = %r{account/(\d+)/conversation/([a-zA-Z0-9-]+)@}

  def initialize(mail, fixture = ChatwootFixture.current)
    @mail = mail
    @fixture = fixture
  end

  def route
    # routing(->(m) { valid_to_address?(m) && (reply_uuid_mail?(m) || in_reply_to_mail?(m)) } => :reply)
    # routing(->(m) { valid_to_address?(m) && EmailChannelFinder.new(m.mail).perform.present? } => :support)
    # routing(all: :default)
    unless valid_to_address?
      return dropped("to_missing", "no To header: Chatwoot's routes need a parsable To, so the catch-all DefaultMailbox drops it") if @mail.to.nil?

      return dropped("to_malformed", "the mail gem can't parse To (mail.to is a #{@mail.to.class}), so the catch-all DefaultMailbox drops it")
    end
    return reply_mailbox if reply_uuid_mail? || in_reply_to_mail?

    channel, via, address = email_channel_finder(@mail)
    return { kind: "inbox", inbox: channel.email, via: via, address: address } if channel

    default_mailbox
  rescue StandardError => e
    # Chatwoot's routing raises too (e.g. Cc the mail gem can't parse makes
    # mail.cc a String, and String#to_a doesn't exist): the job fails and the
    # email goes nowhere.
    dropped("routing_error", "#{e.class}: #{e.message.b.split("\n").first}")
  end

  private

  # --- ApplicationMailbox ---------------------------------------------------

  # "if mail.to returns a string, then it is a malformed `to` header"
  def valid_to_address?
    @mail.to&.class == Mail::AddressContainer
  end

  def reply_uuid_mail?
    @mail.to&.any? do |email|
      conversation_uuid = email.split("@")[0]
      conversation_uuid.match?(REPLY_EMAIL_UUID_PATTERN)
    end
  end

  def in_reply_to_mail?
    in_reply_to = @mail.in_reply_to
    references = @mail.references

    return true if in_reply_to.present? && (
      in_reply_to_matches?(in_reply_to) || @fixture.message_exists?(in_reply_to)
    )

    references.present? && references_match?(references)
  end

  def in_reply_to_matches?(in_reply_to)
    Array.wrap(in_reply_to).any? { |id| id.match?(CONVERSATION_MESSAGE_ID_PATTERN) }
  end

  def references_match?(references)
    Array.wrap(references).any? do |reference|
      reference.match?(CONVERSATION_MESSAGE_ID_PATTERN) ||
        reference.match?(CONVERSATION_FALLBACK_ID_PATTERN) ||
        @fixture.message_exists?(reference)
    end
  end

  # --- EmailChannelFinder -----------------------------------------------------
  # Returns [channel, via, address] or nil; via names the header the matching
  # address came from.

  def email_channel_finder(mail)
    channel_from_primary_recipients(mail) || channel_from_bcc_recipients(mail)
  end

  def channel_from_primary_recipients(mail)
    primary_recipient_emails(mail).each do |email, via|
      channel = channel_from_email(email)
      return [channel, via, email] if channel.present?
    end

    nil
  end

  def channel_from_bcc_recipients(mail)
    bcc_recipient_emails(mail).each do |email|
      channel = channel_from_email(email)

      # Skip if BCC processing is disabled for this account
      next if channel && !allow_bcc_processing?(channel.account_id)

      return [channel, "bcc", email] if channel.present?
    end

    nil
  end

  # (mail.to.to_a + mail.cc.to_a + [mail['X-Original-To'].try(:value)]).flatten.compact
  # When X-Original-To occurs more than once, mail['X-Original-To'] is an Array
  # of fields, which has no #value: try gives nil and both are ignored.
  def primary_recipient_emails(mail)
    tagged = mail.to.to_a.map { |email| [email, "to"] } +
      mail.cc.to_a.map { |email| [email, "cc"] } +
      [[mail["X-Original-To"].try(:value), "x_original_to"]]
    tagged.reject { |email, _| email.nil? }
  end

  def bcc_recipient_emails(mail)
    mail.bcc.to_a.flatten.compact
  end

  def channel_from_email(email)
    @fixture.channel_by_email(normalize_email_with_plus_addressing(email))
  end

  # EmailHelper: john+test@xyc.com is the same as john@xyc.com
  def normalize_email_with_plus_addressing(email)
    "#{email.split('@').first.split('+').first}@#{email.split('@').last}".downcase
  end

  # GlobalConfigService.load('SKIP_INCOMING_BCC_PROCESSING', ''): here the env
  # variable of that name, a comma-separated list of account ids.
  def bcc_processing_skipped_accounts
    config_value = ENV.fetch("SKIP_INCOMING_BCC_PROCESSING", "")
    return [] if config_value.blank?

    config_value.split(",").map(&:to_i)
  end

  def allow_bcc_processing?(account_id)
    bcc_processing_skipped_accounts.exclude?(account_id.to_i)
  end

  # --- ReplyMailbox -----------------------------------------------------------

  def reply_mailbox
    # before_processing :conversation_uuid_from_to_address, :find_relative_conversation
    conversation_uuid, via = conversation_uuid_from_to_address
    if conversation_uuid
      conversation = @fixture.conversation_by_uuid(conversation_uuid)
      return conversation_route(conversation, via) if conversation

      return dropped("reply_conversation_not_found",
                     "reply+#{conversation_uuid.first} names no conversation; ReplyMailbox stores nothing")
    end

    if @mail.in_reply_to.present? || @mail.references.present?
      if @mail.in_reply_to.present?
        conversation = find_conversation_with_in_reply_to
        return conversation_route(conversation, "in_reply_to") if conversation
      end
      if @mail.references.present?
        conversation = find_conversation_with_references
        return conversation_route(conversation, "references") if conversation
      end
    end
    dropped("reply_conversation_not_found",
            "routed as a reply, but no conversation matches In-Reply-To or References; ReplyMailbox stores nothing")
  end

  # MailPresenter#mail_receiver: To, or X-Forwarded-For when To is blank.
  def conversation_uuid_from_to_address
    receivers, via =
      if @mail.to.blank?
        forwarded_for = @mail["X-Forwarded-For"].try(:value)
        [forwarded_for.present? ? [forwarded_for] : [], "x_forwarded_for"]
      else
        [@mail.to, "to"]
      end

    receivers.each do |email|
      username = email.split("@")[0]
      match_result = username.match(REPLY_EMAIL_UUID_PATTERN)
      return [match_result.captures, via] if match_result
    end
    nil
  end

  def find_conversation_with_in_reply_to
    match_result = nil
    in_reply_to_addresses = @mail.in_reply_to
    in_reply_to_addresses = [in_reply_to_addresses] if in_reply_to_addresses.is_a?(String)
    in_reply_to_addresses.each do |in_reply_to|
      match_result = in_reply_to.match(CONVERSATION_MESSAGE_ID_PATTERN)
      break if match_result
    end

    conversation = @fixture.conversation_by_uuid(match_result.captures[0]) if match_result
    conversation || @fixture.conversation_by_message_source_id(in_reply_to_addresses)
  end

  def find_conversation_with_references
    references_addresses = @mail.references
    references_addresses = [references_addresses] if references_addresses.is_a?(String)

    references_addresses.each do |reference|
      conversation = find_conversation_from_reference(reference)
      return conversation if conversation && conversation_belongs_to_channel?(conversation)
    end
    nil
  end

  def find_conversation_from_reference(reference)
    message_match = reference.match(CONVERSATION_MESSAGE_ID_PATTERN)
    if message_match
      conversation = @fixture.conversation_by_uuid(message_match.captures[0])
      return conversation if conversation
    end

    fallback_match = reference.match(CONVERSATION_FALLBACK_ID_PATTERN)
    if fallback_match
      conversation = @fixture.conversation_by_uuid(fallback_match.captures[1])
      return conversation if conversation
    end

    @fixture.conversation_by_message_source_id(reference)
  end

  # The References fallback only accepts a conversation of the inbox that
  # EmailChannelFinder finds for this email.
  def conversation_belongs_to_channel?(conversation)
    channel, = email_channel_finder(@mail)
    return false unless channel

    conversation.inbox.id == channel.id
  end

  # --- DefaultMailbox (`def process; end`) ------------------------------------

  def default_mailbox
    if x_original_to_ignored_but_would_match?
      return dropped("x_original_to_repeated",
                     "X-Original-To occurs more than once, so Chatwoot ignores every value (one would match an inbox); DefaultMailbox drops it")
    end

    dropped("no_matching_inbox", "no inbox has To, Cc, X-Original-To or Bcc as its email or forward_to_email; DefaultMailbox drops it")
  end

  def x_original_to_ignored_but_would_match?
    fields = @mail.header.fields.select { |field| field.name.to_s.casecmp?("X-Original-To") }
    fields.size > 1 && fields.any? do |field|
      channel_from_email(field.value)
    rescue StandardError
      false
    end
  end

  def conversation_route(conversation, via)
    { kind: "conversation", uuid: conversation.uuid, inbox: conversation.inbox.email, via: via }
  end

  def dropped(why, detail)
    { kind: "dropped", why: why, detail: detail }
  end
end
