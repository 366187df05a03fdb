package nbd

// Constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md).

const (
	magicNBD           = 0x4e42444d41474943 // "NBDMAGIC"
	magicOption        = 0x49484156454f5054 // "IHAVEOPT"
	magicOptionReply   = 0x0003e889045565a9
	magicRequest       = 0x25609513
	magicSimpleReply   = 0x67446698
	magicStructuredRep = 0x668e33ef
	magicOldstyle      = 0x00420281861253
)

// handshake flags (server) and client flags
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
)

// options
const (
	optExportName      = 1
	optAbort           = 2
	optStartTLS        = 5
	optGo              = 7
	optStructuredReply = 8
	optSetMetaContext  = 10
)

// option reply types; errors have bit 31 set
const (
	repAck         = 1
	repInfo        = 3
	repMetaContext = 4
	repFlagError   = 1 << 31
	repErrUnsup    = repFlagError | 1
	repErrPolicy   = repFlagError | 2
	repErrInvalid  = repFlagError | 3
	repErrPlatform = repFlagError | 4
	repErrTLSReqd  = repFlagError | 5
	repErrUnknown  = repFlagError | 6
	repErrShutdown = repFlagError | 7
	repErrBlockSz  = repFlagError | 8
	repErrTooBig   = repFlagError | 9
)

// info types of NBD_OPT_GO
const (
	infoExport    = 0
	infoBlockSize = 3
)

// transmission flags
const (
	tflagHasFlags        = 1 << 0
	tflagReadOnly        = 1 << 1
	tflagSendFlush       = 1 << 2
	tflagSendFUA         = 1 << 3
	tflagSendTrim        = 1 << 5
	tflagSendWriteZeroes = 1 << 6
	tflagSendDF          = 1 << 7
	tflagCanMultiConn    = 1 << 8
	tflagSendFastZero    = 1 << 11
)

// commands
const (
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
	cmdBlockStatus = 7
)

// command flags
const (
	cmdFlagNoHole = 1 << 1
	cmdFlagReqOne = 1 << 3
)

// structured reply chunk types and flags
const (
	replyFlagDone     = 1 << 0
	chunkNone         = 0
	chunkOffsetData   = 1
	chunkOffsetHole   = 2
	chunkBlockStatus  = 5
	chunkError        = 1<<15 | 1
	chunkErrorOffset  = 1<<15 | 2
	chunkErrorBitMask = 1 << 15
)

// base:allocation status flags
const (
	stateHole = 1 << 0
	stateZero = 1 << 1
)

// contextBaseAllocation is the metadata context of holes and zeroes.
const contextBaseAllocation = "base:allocation"

// defaultPort is the IANA port of NBD.
const defaultPort = "10809"

// Limits: a request is at most maxRequest bytes unless the server
// advertises less; names and messages from the server are bounded before
// they are read.
const (
	maxRequest     = 32 << 20
	maxOptionReply = 64 << 10
	maxStringLen   = 4096
)
