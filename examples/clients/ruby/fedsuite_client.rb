#!/usr/bin/env ruby
# frozen_string_literal: true

# A fedsuite client in Ruby, from the protos alone: lists the parties, submits a horizontal
# FedAvg job on the demo's breast-cancer dataset, follows WatchJob to the end and exits 0 only if
# the job SUCCEEDED (1 with a one-line reason otherwise, 2 on bad arguments).
#
#   ruby examples/clients/ruby/fedsuite_client.rb --coordinator 127.0.0.1:50051 \
#     --ca certs/ca.pem --cert certs/admin.pem --key certs/admin.key
#
# Every option can also come from the environment (FEDSUITE_COORDINATOR, FEDSUITE_CA, ...).
# Needs Debian's ruby-grpc and ruby-google-protobuf; lib/ holds the code generate.sh made.

$LOAD_PATH.unshift(File.join(__dir__, 'lib'))

require 'optparse'
require 'grpc'
require 'google/protobuf/well_known_types' # Timestamp#to_time; the generated code does not load it
require 'fedsuite/v1/coordinator_services_pb'

Options = Struct.new(:coordinator, :ca, :cert, :key, :server_name, :dataset, :rounds, :name,
                     :timeout, :watch_timeout)

def parse_options(argv)
  env = ->(name, default = nil) { ENV.fetch("FEDSUITE_#{name}", default) }
  options = Options.new(env.call('COORDINATOR'), env.call('CA'), env.call('CERT'), env.call('KEY'),
                        env.call('SERVER_NAME', 'coordinator'), env.call('DATASET', 'breast'),
                        Integer(env.call('ROUNDS', '3')), env.call('JOB_NAME', 'ruby-client'),
                        Float(env.call('TIMEOUT', '10')), Float(env.call('WATCH_TIMEOUT', '300')))
  OptionParser.new do |parser|
    parser.on('--coordinator ADDRESS', 'host:port of the coordinator') { |v| options.coordinator = v }
    parser.on('--ca PATH', 'CA certificate (PEM)') { |v| options.ca = v }
    parser.on('--cert PATH', 'admin certificate (PEM)') { |v| options.cert = v }
    parser.on('--key PATH', 'admin private key (PEM)') { |v| options.key = v }
    parser.on('--server-name NAME', 'node id the coordinator certificate names (default coordinator)') do |v|
      options.server_name = v
    end
    parser.on('--dataset NAME', 'dataset the parties declare (default breast)') { |v| options.dataset = v }
    parser.on('--rounds N', Integer, 'rounds to train (default 3)') { |v| options.rounds = v }
    parser.on('--name NAME', 'job name (default ruby-client)') { |v| options.name = v }
    parser.on('--timeout SECONDS', Float, 'deadline of each unary call (default 10)') { |v| options.timeout = v }
    parser.on('--watch-timeout SECONDS', Float, 'deadline of the whole watch (default 300)') do |v|
      options.watch_timeout = v
    end
  end.parse!(argv)
  missing = %i[coordinator ca cert key].select { |field| options[field].nil? }
  abort_with(2, "missing --#{missing.join(', --')} (or FEDSUITE_#{missing.first.upcase})") unless missing.empty?
  options
end

def abort_with(code, message)
  warn "error: #{message}"
  exit code
end

# The coordinator's certificate names its node id, whatever address reaches it.
def stub_for(options)
  credentials = GRPC::Core::ChannelCredentials.new(File.read(options.ca), File.read(options.key),
                                                   File.read(options.cert))
  Fedsuite::V1::Coordinator::Stub.new(options.coordinator, credentials,
                                      channel_args: { 'grpc.ssl_target_name_override' => options.server_name })
end

def deadline(seconds)
  Time.now + seconds
end

def list_parties(stub, options)
  parties = []
  token = ''
  loop do
    page = stub.list_parties(Fedsuite::V1::ListPartiesRequest.new(page_token: token),
                             deadline: deadline(options.timeout))
    parties.concat(page.parties.to_a)
    token = page.next_page_token
    return parties if token.empty?
  end
end

def horizontal_job(options)
  Fedsuite::V1::JobSpec.new(
    name: options.name,
    horizontal: Fedsuite::V1::HorizontalJobSpec.new(
      dataset: options.dataset,
      model: Fedsuite::V1::ModelSpec.new(type: :MODEL_TYPE_LOGISTIC_REGRESSION),
      rounds: options.rounds, local_epochs: 1, batch_size: 16, learning_rate: 0.05,
      penalty: :PENALTY_L2, alpha: 0.001, min_parties: 2, fraction: 1.0, seed: 42
    )
  )
end

def describe(event)
  line = "event #{event.sequence} #{event.type} round=#{event.round}/#{event.total_rounds}"
  line += " train_loss=#{format('%.4f', event.metrics.train_loss)}" if event.metrics
  line += " accuracy=#{format('%.4f', event.metrics.eval.accuracy)}" if event.metrics&.eval
  line += " #{event.message}" unless event.message.empty?
  line
end

def status_name(code)
  GRPC::Core::StatusCodes.constants.find { |name| GRPC::Core::StatusCodes.const_get(name) == code } || code
end

def run(options)
  stub = stub_for(options)
  list_parties(stub, options).each do |party|
    puts "party #{party.party_id} #{party.role} online=#{party.online} datasets=#{party.datasets.map(&:name).join(',')}"
  end
  job_id = stub.submit_job(Fedsuite::V1::SubmitJobRequest.new(spec: horizontal_job(options)),
                           deadline: deadline(options.timeout)).job_id
  puts "submitted #{job_id}"
  stub.watch_job(Fedsuite::V1::WatchJobRequest.new(job_id: job_id),
                 deadline: deadline(options.watch_timeout)).each { |event| puts describe(event) }
  job = stub.get_job(Fedsuite::V1::GetJobRequest.new(job_id: job_id), deadline: deadline(options.timeout))
  # Timestamps: to_time gives a Time (to_f would give a Rational in google-protobuf 3.21).
  seconds = job.updated_at.to_time - job.created_at.to_time
  puts "job #{job.job_id} #{job.state} rounds=#{job.current_round} seconds=#{format('%.3f', seconds)}"
  abort_with(1, "job #{job.job_id} ended #{job.state}: #{job.reason}") unless job.state == :JOB_STATE_SUCCEEDED
end

begin
  run(parse_options(ARGV))
rescue GRPC::BadStatus => e
  abort_with(1, "#{status_name(e.code)}: #{e.details}")
rescue OptionParser::ParseError, ArgumentError => e
  abort_with(2, e.message)
rescue SystemCallError => e
  abort_with(2, e.message)
end
