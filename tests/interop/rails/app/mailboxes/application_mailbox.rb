class ApplicationMailbox < ActionMailbox::Base
  routing all: :recording
end
