require "digest"
require "fileutils"
require "json"

# Records every routed message: the exact stored bytes go to
# $DATA_DIR/messages/<sha256>.eml and one JSON line is appended to
# $DATA_DIR/received.jsonl (format: see README.md), including `route`: where
# Chatwoot would have put the message (ChatwootRouting), dropped ones too.
class RecordingMailbox < ApplicationMailbox
  def process
    source = inbound_email.source.b # exact bytes as stored by Active Storage
    sha256 = Digest::SHA256.hexdigest(source)
    data_dir = InteropRails::DATA_DIR

    messages_dir = File.join(data_dir, "messages")
    FileUtils.mkdir_p(messages_dir)
    path = File.join(messages_dir, "#{sha256}.eml")
    tmp = "#{path}.tmp-#{Process.pid}-#{Thread.current.object_id}"
    File.binwrite(tmp, source)
    File.rename(tmp, path) # atomic; the .eml exists before its jsonl line does

    headers = self.class.raw_headers(source)
    message_id = headers.find { |name, _| name.casecmp?("Message-ID") }&.last
    subject = headers.find { |name, _| name.casecmp?("Subject") }&.last
    record = {
      message_id: message_id && utf8(message_id.sub(/\A</, "").sub(/>\z/, "")),
      sha256: sha256,
      size: source.bytesize,
      to: addresses(headers, "To"),
      cc: addresses(headers, "Cc"),
      x_original_to: headers.select { |name, _| name.casecmp?("X-Original-To") }.map { |_, v| utf8(v) },
      subject: subject && utf8(subject),
      route: json_safe(chatwoot_route),
    }
    Rails.logger.info "chatwoot route #{record[:message_id].inspect}: #{JSON.generate(record[:route])}"

    line = JSON.generate(record) + "\n"
    File.open(File.join(data_dir, "received.jsonl"), File::WRONLY | File::APPEND | File::CREAT, 0o644) do |f|
      f.flock(File::LOCK_EX)
      f.write(line)
      f.flush
    end
  end

  # [[name, value], ...] from the header block (everything before the first
  # empty line), unfolded, values stripped, all as binary strings.
  def self.raw_headers(source)
    blank_line = source.index(/\r?\n\r?\n/n)
    block = blank_line ? source[0, blank_line] : source
    block.split(/\r?\n/n).each_with_object([]) do |line, fields|
      if line.match?(/\A[ \t]/n) && fields.any?
        fields.last[1] << line
      elsif (i = line.index(":"))
        fields << [line[0...i].strip, line[(i + 1)..].dup]
      end
    end.each { |field| field[1] = field[1].strip }
  end

  private
    # Where Chatwoot would have put it. ChatwootRouting#route already turns
    # Chatwoot's own failures into a dropped route; this also covers the mail
    # gem failing to parse the message at all.
    def chatwoot_route
      ChatwootRouting.new(mail).route
    rescue StandardError => e
      { kind: "dropped", why: "routing_error", detail: "#{e.class}: #{e.message.b.split("\n").first}" }
    end

    # Addresses of every `field` (To, Cc) header, in order (mail gem parser; a
    # crude addr-spec scan when it can't parse the value, e.g. raw 8-bit bytes).
    def addresses(headers, field)
      headers.select { |name, _| name.casecmp?(field) }.flat_map do |_, value|
        begin
          Mail::AddressList.new(value).addresses.map(&:address)
        rescue StandardError
          value.scan(/[^\s<>,;:"()]+@[^\s<>,;:"()]+/n)
        end
      end.compact.map { |address| utf8(address) }
    end

    def utf8(s)
      s.to_s.dup.force_encoding(Encoding::UTF_8).scrub("\uFFFD")
    end

    # Strings from the mail gem may carry raw 8-bit header bytes.
    def json_safe(value)
      case value
      when Hash then value.transform_values { |v| json_safe(v) }
      when Array then value.map { |v| json_safe(v) }
      when String then utf8(value)
      else value
      end
    end
end
